"""YAML with line numbers: PyYAML parses (libyaml's safe loader when it is there) and a
loader subclass records the line of every mapping key and every repeated key, so
that validation errors can point at them."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = [
    "LineLoader",
    "duplicate_keys",
    "line_of",
]


class _LineMap(dict[str, Any]):
    """A mapping that remembers the line (1-based) of each of its keys."""

    lines: dict[str, int]
    start_line: int
    duplicates: list[tuple[str, int]]


# libyaml's parser when PyYAML has it (several times faster: `kiln plan` and `kiln matrix
# validate` are called many times per CI job), the pure-Python one otherwise. Both are safe
# loaders and both keep the node marks the line numbers come from.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    pass


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> _LineMap:
    loader.flatten_mapping(node)
    out = _LineMap()
    out.lines = {}
    out.duplicates = []
    out.start_line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        key_s = str(key)
        if key_s in out:
            # A repeated key in one mapping is a silent overwrite in YAML; treat it as an error.
            out.duplicates.append((key_s, key_node.start_mark.line + 1))
            continue
        out[key_s] = value
        out.lines[key_s] = key_node.start_mark.line + 1
    return out


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def duplicate_keys(mapping: object) -> list[tuple[str, int]]:
    return list(mapping.duplicates) if isinstance(mapping, _LineMap) else []


def line_of(mapping: object, key: str | None = None) -> int | None:
    if not isinstance(mapping, _LineMap):
        return None
    if key is not None and key in mapping.lines:
        return mapping.lines[key]
    return mapping.start_line

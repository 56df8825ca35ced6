"""``load_matrix``: read ``matrix/``, merge the layers (global defaults, ``os.<os>``,
``arch.<arch>``, the family file's defaults, the backend profile, the entry) and
validate the whole matrix before failing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kiln.errors import MatrixError
from kiln.matrix.model import (
    ARCHES,
    BACKENDS,
    BACKENDS_FILE,
    DEFAULTS_FILE,
    DEFAULTS_KEYS,
    FIELD_BY_NAME,
    FIELDS,
    OSES,
    Disabled,
    Entry,
    Matrix,
)
from kiln.matrix.rules import (
    RULES,
    Problems,
    check_disabled,
    check_value,
    suggest,
    unknown_key,
)
from kiln.matrix.yaml_lines import LineLoader, duplicate_keys, line_of

__all__ = [
    "load_matrix",
]


def _read_yaml(path: Path, problems: Problems) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.add(path, None, "", f"cannot read: {exc.strerror}")
        return None
    try:
        return yaml.load(text, Loader=LineLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        problems.add(path, line, "", f"not valid YAML: {problem}", "fix the YAML syntax")
        return None


def _check_fields(block: Mapping[str, Any], file: Path, where: str, problems: Problems,
                  allowed: Iterable[str]) -> dict[str, Any]:
    """Keep the valid fields of one block; report unknown keys and bad values."""
    allowed = tuple(allowed)
    out: dict[str, Any] = {}
    for dup_key, dup_line in duplicate_keys(block):
        problems.add(file, dup_line, where, f"key '{dup_key}' appears twice",
                     "keep one of them")
    for key, value in block.items():
        line = line_of(block, key)
        if key not in allowed:
            problems.add(file, line, where, f"unknown key '{key}'; " + unknown_key(key, allowed))
            continue
        spec = FIELD_BY_NAME[key]
        if value is None:
            problems.add(file, line, where, f"field '{key}' is empty", "give it a value or "
                         "remove the key")
            continue
        if spec.kind == "disabled":
            out[key] = value
            continue
        bad = check_value(spec, value)
        if bad is not None:
            problems.add(file, line, where, f"field '{key}': {bad[0]}", bad[1])
            continue
        out[key] = value
    return out


def _defaults_block(doc: object, key: str, file: Path, problems: Problems,
                    sub_keys: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Read ``key: {<name>: {field: value}}`` blocks (os, arch, profiles) of defaults files."""
    if not isinstance(doc, dict) or key not in doc:
        return {}
    block = doc[key]
    if not isinstance(block, dict):
        problems.add(file, line_of(doc, key), key, "expected a mapping")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, fields in block.items():
        where = f"{key}.{name}"
        if sub_keys is not None and name not in sub_keys:
            problems.add(file, line_of(block, name), where,
                         f"unknown {key} '{name}'; " + unknown_key(name, sub_keys))
            continue
        if fields is None:
            fields = {}
        if not isinstance(fields, dict):
            problems.add(file, line_of(block, name), where, "expected a mapping of fields")
            continue
        allowed = [f.name for f in FIELDS if f.name not in ("id", "disabled")]
        out[str(name)] = _check_fields(fields, file, where, problems, allowed)
    return out


def load_matrix(root: Path | str = "matrix") -> Matrix:
    """Load, merge and validate every file in ``root``. Raises ``MatrixError`` with all
    problems found."""
    root = Path(root)
    problems = Problems(root)
    if not root.is_dir():
        raise MatrixError([f"{root}: no such directory (fix: pass the matrix directory, "
                           "e.g. `kiln matrix validate matrix/`)"], root=str(root))

    defaults_path = root / DEFAULTS_FILE
    backends_path = root / BACKENDS_FILE
    global_defaults: dict[str, Any] = {}
    os_defaults: dict[str, dict[str, Any]] = {}
    arch_defaults: dict[str, dict[str, Any]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    not_in_defaults = ("id", "disabled", "os", "arch")
    families: list[str] = []

    if defaults_path.is_file():
        doc = _read_yaml(defaults_path, problems)
        if doc is not None and not isinstance(doc, dict):
            problems.add(defaults_path, None, "", "expected a mapping at the top level")
        elif isinstance(doc, dict):
            for key in doc:
                if key not in DEFAULTS_KEYS:
                    problems.add(defaults_path, line_of(doc, key), "",
                                 f"unknown top-level key '{key}'; "
                                 + unknown_key(key, DEFAULTS_KEYS))
            fam = doc.get("families")
            if isinstance(fam, list) and all(isinstance(f, str) for f in fam):
                families = [str(f) for f in fam]
            else:
                problems.add(defaults_path, line_of(doc, "families"), "families",
                             "expected a list of family file names (without .yaml)",
                             "write families: [macos, ubuntu, ...]")
            block = doc.get("defaults")
            if isinstance(block, dict):
                global_defaults = _check_fields(
                    block, defaults_path, "defaults", problems,
                    [f.name for f in FIELDS if f.name not in not_in_defaults])
            os_defaults = _defaults_block(doc, "os", defaults_path, problems, OSES)
            arch_defaults = _defaults_block(doc, "arch", defaults_path, problems, ARCHES)
    else:
        problems.add(defaults_path, None, "", "missing", "create matrix/defaults.yaml")

    if backends_path.is_file():
        doc = _read_yaml(backends_path, problems)
        if isinstance(doc, dict):
            for key in doc:
                if key not in ("profiles",):
                    problems.add(backends_path, line_of(doc, key), "",
                                 f"unknown top-level key '{key}'; "
                                 + unknown_key(key, ("profiles",)))
            profiles = _defaults_block(doc, "profiles", backends_path, problems)
            for name in list(profiles):
                backend = name.split("@", 1)[0]
                if backend not in BACKENDS:
                    problems.add(backends_path, None, f"profiles.{name}",
                                 f"unknown backend '{backend}'; "
                                 + (suggest(backend, BACKENDS) or "use one of "
                                    + ", ".join(BACKENDS)))

    present = sorted(p.stem for p in root.glob("*.yaml")
                     if p.name not in (DEFAULTS_FILE, BACKENDS_FILE))
    for stem in present:
        if stem not in families and defaults_path.is_file():
            problems.add(root / f"{stem}.yaml", None, "",
                         "not listed in defaults.yaml `families`, so its entries would be ignored",
                         f"add '{stem}' to families in matrix/defaults.yaml")
    for stem in families:
        if stem not in present:
            problems.add(defaults_path, line_of(doc, "families") if defaults_path.is_file()
                         else None, "families", f"lists '{stem}' but matrix/{stem}.yaml does "
                         "not exist", "create the file or remove the name")
    family_files = [root / f"{stem}.yaml" for stem in families if stem in present]
    if not family_files:
        problems.add(root, None, "", "no entry files (*.yaml besides defaults.yaml)",
                     "add e.g. matrix/ubuntu.yaml with an `entries:` list")

    seen: dict[str, tuple[Path, int | None]] = {}
    entries: list[Entry] = []
    entry_fields = [f.name for f in FIELDS]
    for path in family_files:
        doc = _read_yaml(path, problems)
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.add(path, None, "", "expected a mapping with `defaults:` and `entries:`")
            continue
        for key in doc:
            if key not in ("defaults", "entries"):
                problems.add(path, line_of(doc, key), "", f"unknown top-level key '{key}'; "
                             + unknown_key(key, ("defaults", "entries")))
        file_defaults: dict[str, Any] = {}
        block = doc.get("defaults")
        if block is not None:
            if isinstance(block, dict):
                file_defaults = _check_fields(
                    block, path, "defaults", problems,
                    [f.name for f in FIELDS if f.name not in ("id", "disabled")])
            else:
                problems.add(path, line_of(doc, "defaults"), "defaults", "expected a mapping")
        raw_entries = doc.get("entries")
        if not isinstance(raw_entries, list):
            problems.add(path, line_of(doc, "entries"), "entries",
                         "expected a list of entries", "write `entries:` then `- id: ...` items")
            continue
        for index, raw in enumerate(raw_entries):
            if not isinstance(raw, dict):
                problems.add(path, None, f"entries[{index}]", "expected a mapping")
                continue
            raw_id = raw.get("id")
            where = f"entry '{raw_id}'" if isinstance(raw_id, str) else f"entries[{index}]"
            line = line_of(raw, "id")
            if isinstance(raw_id, str):
                if raw_id in seen:
                    first_path, first_line = seen[raw_id]
                    problems.add(path, line, where,
                                 f"duplicate id '{raw_id}' (first defined in "
                                 f"{problems.show(first_path)}:{first_line})",
                                 "give every entry its own id")
                    continue
                seen[raw_id] = (path, line)
            own = _check_fields(raw, path, where, problems, entry_fields)
            entry = _merge_entry(own, file_defaults, global_defaults, os_defaults,
                                 arch_defaults, profiles, raw, path, where, problems)
            if entry is not None:
                entries.append(entry)

    if problems.items:
        raise MatrixError(problems.items, root=str(root))
    return Matrix(root=root, entries=tuple(entries))


def _merge_entry(own: dict[str, Any], file_defaults: Mapping[str, Any],
                 global_defaults: Mapping[str, Any],
                 os_defaults: Mapping[str, Mapping[str, Any]],
                 arch_defaults: Mapping[str, Mapping[str, Any]],
                 profiles: Mapping[str, Mapping[str, Any]],
                 raw: Mapping[str, Any], path: Path, where: str,
                 problems: Problems) -> Entry | None:
    if any(k in FIELD_BY_NAME and k not in own for k in raw):
        # Some of the entry's own fields were invalid and are already reported; checking what
        # is missing or inconsistent without them would only add noise.
        return None
    before = len(problems.items)
    layered: dict[str, Any] = dict(global_defaults)
    os_name = own.get("os", file_defaults.get("os"))
    arch_name = own.get("arch", file_defaults.get("arch"))
    if isinstance(os_name, str):
        layered.update(os_defaults.get(os_name, {}))
    if isinstance(arch_name, str):
        layered.update(arch_defaults.get(arch_name, {}))
    layered.update(file_defaults)
    backend = own.get("backend", layered.get("backend"))
    version = own.get("backend_version", layered.get("backend_version"))
    if isinstance(backend, str) and backend != "cpu":
        key = f"{backend}@{version}" if version else backend
        if key in profiles:
            layered.update(profiles[key])
        elif version is not None and "backend_version" in own:
            known = sorted(k for k in profiles if k.startswith(f"{backend}@"))
            problems.add(path, line_of(raw, "backend_version"), where,
                         f"field 'backend_version': no profile '{key}' in backends.yaml",
                         "add the profile or use one of: " + (", ".join(known) or "(none)"))
    layered.update(own)

    for spec in FIELDS:
        if spec.required and spec.name not in layered:
            problems.add(path, line_of(raw), where, f"missing required field '{spec.name}'",
                         f"add {spec.name}: ..." + (f" (one of: {', '.join(spec.choices)})"
                                                    if spec.choices else ""))
    if len(problems.items) > before:
        return None

    disabled: Disabled | None = None
    if "disabled" in own:
        disabled = check_disabled(own["disabled"], path, where, problems,
                                   line_of(raw, "disabled"))
    layered.setdefault("cpu_dispatch", [])
    layered.setdefault("gpu_targets", [])
    layered.setdefault("cmake", {})
    for rule, fld, message, fix in RULES:
        if rule(layered):
            problems.add(path, line_of(raw, fld) or line_of(raw, "id"), where,
                         f"field '{fld}': " + message.format(**{
                             k: layered.get(k) for k in FIELD_BY_NAME}), fix.format(**{
                                 k: layered.get(k) for k in FIELD_BY_NAME}))
    if len(problems.items) > before:
        return None
    cmake = layered["cmake"]
    return Entry(
        id=layered["id"], os=layered["os"], arch=layered["arch"],
        distro=layered.get("distro"), backend=layered["backend"],
        backend_version=layered.get("backend_version"), libc=layered["libc"],
        libc_floor=layered.get("libc_floor"), min_os=layered.get("min_os"),
        cpu_baseline=layered["cpu_baseline"], cpu_dispatch=tuple(layered["cpu_dispatch"]),
        gpu_targets=tuple(layered["gpu_targets"]), min_driver=layered.get("min_driver"),
        build=layered["build"], runner=layered["runner"], container=layered.get("container"),
        verify=layered["verify"], verify_note=_one_line(layered.get("verify_note")),
        archive=layered["archive"],
        cmake=tuple(sorted((str(k), str(v)) for k, v in cmake.items())),
        disabled=disabled, notes=_one_line(layered.get("notes")),
        source=path.name,
    )


def _one_line(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())

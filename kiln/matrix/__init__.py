"""The matrix stage: ``matrix/`` loaded and validated into frozen ``Entry`` values.

The matrix is data: ``defaults.yaml`` (shared defaults, per-OS and per-arch blocks),
``backends.yaml`` (per backend@version profiles) and one file per OS family holding
``defaults:`` and ``entries:``. Merge order, lowest first: global defaults, ``os.<os>``,
``arch.<arch>``, the family file's defaults, the backend profile, the entry.

Validation collects every problem in the whole matrix before failing, and each message names
the file (with line), the entry id, the field, what was expected and how to fix it. Unknown
keys suggest the closest valid key. The field table ``FIELDS`` is the single source of truth:
it drives validation, the ``Entry`` conversion and ``matrix/schema.json`` (see
``json_schema``), so the editor schema cannot drift from what kiln accepts.

Inside: ``catalogue`` (backends and CPU levels, once), ``model`` (the field table,
``Requirements``, ``Entry``, ``Matrix``), ``yaml_lines`` (PyYAML with the line of every key),
``rules`` (value checks and impossible combinations), ``loader`` (``load_matrix``) and
``schema`` (``json_schema``).
"""

from __future__ import annotations

from kiln.matrix.loader import load_matrix
from kiln.matrix.model import (
    ARCHES,
    BACKENDS,
    FIELD_BY_NAME,
    FIELDS,
    ID_RE,
    OSES,
    REQUIREMENT_FIELDS,
    RUNNER_RE,
    VERIFY_METHODS,
    Disabled,
    Entry,
    FieldSpec,
    Matrix,
    Requirements,
)
from kiln.matrix.schema import json_schema

__all__ = [
    "ARCHES",
    "BACKENDS",
    "FIELDS",
    "FIELD_BY_NAME",
    "ID_RE",
    "OSES",
    "REQUIREMENT_FIELDS",
    "RUNNER_RE",
    "VERIFY_METHODS",
    "Disabled",
    "Entry",
    "FieldSpec",
    "Matrix",
    "Requirements",
    "json_schema",
    "load_matrix",
]

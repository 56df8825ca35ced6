"""Where each header field of a GGUF file lies, for tests that corrupt files on purpose.

A small independent walker of the GGUF v2/v3 layout (magic, version, counts, metadata
entries, tensor infos) that records the byte offset, width and role of every field, so a test
can truncate a file exactly at a field boundary or overwrite one count, length, type or offset
with a hostile value. The ``gguf`` package is not used on purpose: it would refuse the very
files these tests produce, and the tests must not trust the reader they are testing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class Field:
    offset: int
    width: int  # bytes
    kind: str  # magic, version, count, strlen, type, arrcount, ndims, dim, ttype, toffset, value
    what: str  # human description for test ids and messages


def fields(data: bytes, *, max_array_elems: int = 4) -> tuple[list[Field], int]:
    """Fields of the header up to the end of the tensor infos, and that end offset.

    For arrays only the first ``max_array_elems`` string lengths are recorded (a vocabulary has
    tens of thousands)."""
    out: list[Field] = []
    pos = 0

    def u32() -> int:
        nonlocal pos
        v = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        return v

    def u64() -> int:
        nonlocal pos
        v = struct.unpack_from("<Q", data, pos)[0]
        pos += 8
        return v

    def string(what: str, record: bool = True) -> str:
        nonlocal pos
        if record:
            out.append(Field(pos, 8, "strlen", what))
        n = u64()
        s = data[pos : pos + n]
        pos += n
        return s.decode("utf-8", "replace")

    out.append(Field(0, 4, "magic", "magic"))
    pos = 4
    out.append(Field(pos, 4, "version", "version"))
    u32()
    out.append(Field(pos, 8, "count", "tensor count"))
    n_tensors = u64()
    out.append(Field(pos, 8, "count", "metadata count"))
    n_kv = u64()
    for i in range(n_kv):
        key = string(f"key length of kv {i}")
        out.append(Field(pos, 4, "type", f"type of {key}"))
        t = u32()
        if t == STRING:
            string(f"string length of {key}")
        elif t == ARRAY:
            out.append(Field(pos, 4, "type", f"element type of {key}"))
            et = u32()
            out.append(Field(pos, 8, "arrcount", f"element count of {key}"))
            n = u64()
            if et == STRING:
                for j in range(n):
                    string(f"length of element {j} of {key}", record=j < max_array_elems)
            else:
                pos += SCALAR_SIZES[et] * n
        else:
            out.append(Field(pos, SCALAR_SIZES[t], "value", f"value of {key}"))
            pos += SCALAR_SIZES[t]
    for i in range(n_tensors):
        name = string(f"name length of tensor {i}")
        out.append(Field(pos, 4, "ndims", f"dimension count of {name}"))
        nd = u32()
        for d in range(nd):
            out.append(Field(pos, 8, "dim", f"dimension {d} of {name}"))
            u64()
        out.append(Field(pos, 4, "ttype", f"type of {name}"))
        u32()
        out.append(Field(pos, 8, "toffset", f"data offset of {name}"))
        u64()
    return out, pos


def patch(data: bytes, field: Field, value: int) -> bytes:
    """data with field overwritten by value (little-endian, truncated to the field width)."""
    raw = (value & ((1 << (8 * field.width)) - 1)).to_bytes(field.width, "little")
    return data[: field.offset] + raw + data[field.offset + field.width :]

"""Small ELF files written byte by byte, for the tests of measured floors (no compiler)."""

from __future__ import annotations

import struct


def elf_with_versions(needs: dict[str, list[str]], *, android: int | None = None,
         e_type: int = 3) -> bytes:
    """A little-endian ELF64 aarch64 file with .dynstr, .gnu.version_r and maybe an Android
    note."""
    dynstr = b"\0"
    offsets: dict[str, int] = {}
    for name in [*needs, *(v for vs in needs.values() for v in vs)]:
        if name not in offsets:
            offsets[name] = len(dynstr)
            dynstr += name.encode() + b"\0"
    verneed = b""
    libs = list(needs)
    for i, lib in enumerate(libs):
        versions = needs[lib]
        nxt = 0 if i == len(libs) - 1 else 16 + 16 * len(versions)
        verneed += struct.pack("<HHIII", 1, len(versions), offsets[lib], 16, nxt)
        for j, version in enumerate(versions):
            verneed += struct.pack("<IHHII", 0, 0, 2 + j, offsets[version],
                                   0 if j == len(versions) - 1 else 16)
    note = b""
    if android is not None:
        note = struct.pack("<III", 8, 4, 1) + b"Android\0" + struct.pack("<I", android)
    shstr = b"\0.dynstr\0.gnu.version_r\0.note.android.ident\0.shstrtab\0"
    blobs = [(1, 3, dynstr, 0, 0), (9, 0x6FFFFFFE, verneed, 1, len(libs))]
    if note:
        blobs.append((24, 7, note, 0, 0))
    blobs.append((len(shstr) - 10, 3, shstr, 0, 0))
    body = b""
    headers = [b"\0" * 64]
    offset = 64
    for name_at, kind, data, link, info in blobs:
        headers.append(struct.pack("<IIQQQQIIQQ", name_at, kind, 0, 0, offset + len(body),
                                   len(data), link, info, 4, 0))
        body += data + b"\0" * (-len(data) % 8)
    shoff = 64 + len(body)
    ehdr = (b"\x7fELF\x02\x01\x01" + b"\0" * 9
            + struct.pack("<HHIQQQIHHHHHH", e_type, 183, 1, 0, 0, shoff, 0, 64, 0, 0, 64,
                          len(headers), len(headers) - 1))
    return ehdr + body + b"".join(headers)

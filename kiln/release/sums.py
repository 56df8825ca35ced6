"""The names a release is addressed by, and its signed index ``SHA256SUMS``, read strictly.

Everything here reads text that comes from a mirror, before any of it becomes a URL, a path
or a decision: a tag (``b`` and 1 to 9 digits), the ``latest`` pointer, an asset or file
name, and ``SHA256SUMS``. The rules are the same in ``kiln install``, ``install.sh`` and
``install.ps1`` (docs/install.md, "What an installer refuses"); a text that breaks one is
refused with an ``IntegrityError`` (exit 12) naming the line or the value, never repaired.

The patterns are used with ``fullmatch``: ``re.match(r"...$")`` would accept a trailing
newline, since ``$`` also matches before one.
"""

from __future__ import annotations

import re

from kiln.errors import IntegrityError

__all__ = [
    "NAME_RE",
    "TAG_RE",
    "build_number",
    "check_name",
    "check_tag",
    "parse_latest",
    "parse_sums_strict",
]

TAG_RE = re.compile(r"b[0-9]{1,9}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# sha256sum's two forms: text mode ("<hex>  <name>") and binary mode ("<hex> *<name>").
SUMS_LINE_RE = re.compile(r"([0-9a-f]{64})(?:  | \*)(.*)", re.DOTALL)


def check_tag(value: str, *, what: str) -> str:
    """``value`` if it is a tag ``bN`` (1 to 9 digits), else an ``IntegrityError`` naming
    ``what`` (where the value came from)."""
    if not TAG_RE.fullmatch(value):
        raise IntegrityError(f"{what} is {value[:40]!r}, not a release tag (b followed by 1 "
                             "to 9 digits)",
                             hint="the mirror is damaged or hostile: do not install from it")
    return value


def build_number(tag: str) -> int:
    """The build number of a valid tag: ``b42`` -> 42."""
    return int(check_tag(tag, what="the tag")[1:])


def parse_latest(data: bytes, *, source: str) -> str:
    """The tag in a mirror's ``latest`` file: exactly a tag, optionally one newline after."""
    text = data[:-1] if data.endswith(b"\n") else data
    decoded = text.decode("ascii", errors="replace")  # not ASCII: not a tag either
    if not TAG_RE.fullmatch(decoded):
        raise IntegrityError(f"{source} holds {data[:40]!r}, not a release tag (b followed "
                             "by 1 to 9 digits, then at most one newline)",
                             hint="the mirror's latest file is damaged or hostile: check "
                                  "--from, or pass --tag bN")
    return decoded


def check_name(name: str, *, what: str) -> str:
    """``name`` if it can be a file in a release directory: letters, digits and ``._+-``,
    not starting with a dot or dash, no ``..``. Anything else could become a path outside
    the download cache or a URL on another path."""
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise IntegrityError(f"{what} {name[:80]!r} is not a release file name (letters, "
                             "digits and ._+- only, starting with a letter or digit, no '..')",
                             hint="the release is damaged or hostile: do not install it")
    return name


def _bad_name(name: str) -> str | None:
    """Why ``name`` cannot be listed in ``SHA256SUMS``, or ``None``."""
    if not name:
        return "an empty name"
    if name in (".", "..") or name.startswith("."):
        return "a name starting with '.'"
    for ch, what in (("/", "'/'"), ("\\", "a backslash"), ("\0", "a NUL")):
        if ch in name:
            return f"a name with {what}"
    # C0, DEL and C1: none belongs in a file name, and some move a terminal's cursor
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        return "a name with a control character"
    return None


def parse_sums_strict(data: bytes, *, source: str) -> dict[str, str]:
    """``SHA256SUMS`` as ``{name: sha256}``. Each line is exactly ``<64 lower-case hex>  <name>``
    or ``<hex> *<name>`` and ends with a newline (the last one may not), and every name is a
    release file name (``check_name``); a name listed twice
    (even with the same digest: a reader that keeps the last line could be shown another file
    than the one the first line vouches for), a name with '/', a backslash, a NUL or a control
    character, a name starting with '.', a blank line, text that is not UTF-8 and an empty
    file are refused, naming the line."""
    if not data:
        raise IntegrityError(f"{source} is empty", hint="the release is damaged or hostile: "
                                                        "do not install from it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{source} is not UTF-8 text (byte {exc.start})",
                             hint="the release is damaged or hostile") from exc
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    out: dict[str, str] = {}
    for n, line in enumerate(lines, start=1):
        m = SUMS_LINE_RE.fullmatch(line)
        if m is None:
            raise IntegrityError(f"{source}:{n}: not a sha256sum line (<64 lower-case hex>  "
                                 f"<name>): {line[:100]!r}",
                                 hint="the release is damaged or hostile")
        digest, name = m.group(1), m.group(2)
        why = _bad_name(name)
        if why is not None:
            raise IntegrityError(f"{source}:{n}: {why}: {line[:100]!r}",
                                 hint="the release is damaged or hostile")
        if not NAME_RE.fullmatch(name) or ".." in name:
            # Every file of a release has a plain name (contract of release names): a name
            # with a space or shell syntax is not one, whatever a reader would do with it.
            raise IntegrityError(f"{source}:{n}: {name[:80]!r} is not a release file name "
                                 "(letters, digits and ._+- only, starting with a letter or "
                                 "digit, no '..')",
                                 hint="the release is damaged or hostile")
        if name in out:
            raise IntegrityError(f"{source}:{n}: {name!r} is listed twice",
                                 hint="a checksum list that names a file twice is ambiguous: "
                                      "the release is damaged or hostile")
        out[name] = digest
    return out

"""What every case checks after its consumer ran: exit code, message, no traceback, trees
byte for byte, caches holding only verified entries, no injected command's marker anywhere."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import stat
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .corpus import PWNED, Expect

TRACEBACK = "Traceback (most recent call last)"


def tree(root: Path, *, skip: Iterable[Path] = ()) -> dict[str, tuple[str, ...]]:
    """Every entry under ``root`` (not following links): its type, mode and content hash or
    link target. ``skip``: directories left out."""
    skipped = {str(p) for p in skip}
    out: dict[str, tuple[str, ...]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skipped]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = ("file", mode, h.hexdigest())
            else:
                out[rel] = ("special", oct(st.st_mode))
    return out


def diff(before: Mapping[str, tuple[str, ...]], after: Mapping[str, tuple[str, ...]]
         ) -> list[str]:
    lines = [f"removed {k}" for k in sorted(set(before) - set(after))]
    lines += [f"added {k} {after[k][0]}" for k in sorted(set(after) - set(before))]
    lines += [f"changed {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return lines


def pwned(roots: Iterable[Path], *, shallow: Iterable[Path] = ()) -> list[str]:
    """Where an injected ``touch PWNED`` left its file: anywhere under ``roots``, or directly
    in a ``shallow`` directory (the checkout: consumers run with their own cwd, and walking
    the whole checkout for every case would cost more than the case)."""
    found = [str(d / PWNED) for d in shallow if (d / PWNED).exists()]
    for root in roots:
        if root.is_dir():
            for dirpath, _dirs, files in os.walk(root):
                if PWNED in files:
                    found.append(os.path.join(dirpath, PWNED))
    return sorted(set(found))


def bad_cache_entries(caches: Iterable[Path]) -> list[str]:
    """A cache may keep a ``.part`` to resume; any other file must be named by the sha256 of
    its content (``<sha256>-<asset>``): a partial or unverified download is never an entry."""
    bad = []
    for cache in caches:
        if not cache.exists():
            continue
        for p in cache.rglob("*"):
            if not p.is_file() or p.name.endswith(".part"):
                continue
            # the installers' record of the highest index version seen (docs/index.md)
            if p.name in ("trust.json", "trust.json.lock") or p.parent.name == "trust":
                continue
            m = re.match(r"([0-9a-f]{64})-", p.name)
            got = hashlib.sha256(p.read_bytes()).hexdigest()
            if m is None or m.group(1) != got:
                bad.append(f"{p} (sha256 {got[:16]}...)")
    return bad


@dataclass
class Run:
    code: int
    out: str
    err: str
    timed_out: bool = False


def run(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 120,
        input: bytes | None = None, preexec: Callable[[], None] | None = None) -> Run:
    """Run in a new session, so a consumer that hangs is killed with all its children;
    ``preexec`` runs in the child before it starts (resource limits)."""
    proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=preexec)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    return Run(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
               timed_out)


def outcome_problems(r: Run, want: Expect) -> list[str]:
    problems = []
    if r.timed_out:
        problems.append("timed out (killed)")
    elif r.code not in want.codes:
        problems.append(f"exit code {r.code}, want {sorted(want.codes)}")
    if not re.search(want.message, r.err):
        problems.append(f"stderr does not match /{want.message}/")
    if TRACEBACK in r.err or TRACEBACK in r.out:
        problems.append("a Python traceback was printed")
    return problems


def report(problems: Sequence[str], r: Run) -> str:
    return ("; ".join(problems) + f"\n--- exit {r.code}\n--- stdout (tail)\n{r.out[-1500:]}"
            f"\n--- stderr (tail)\n{r.err[-2500:]}")

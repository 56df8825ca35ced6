"""The HTTP client of the server check: the two requests ``kiln.verify.server`` makes of the
project's running server (kiln.toml's ``[smoke.server]``; docs/server.md has the contract),
``GET /health`` and one greedy ``POST /v1/completions``.

It uses requests (already a dependency of kiln's publishers) through a session that ignores
the environment's proxy settings: the server listens on 127.0.0.1, and an ``HTTP_PROXY`` of the
build host must not route the check elsewhere. Every failure (refused connection, timeout, a
body that is not JSON, a reply without the fields asked for) is a ``VerifyError`` that says
which request failed and how, for the check's detail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests

from kiln.errors import VerifyError

__all__ = ["Completion", "Health", "complete", "health"]


@dataclass(frozen=True, kw_only=True)
class Health:
    """What ``GET /health`` answered: ok only for 200 ``{"status":"ok"}``."""

    status: int
    ok: bool
    detail: str            # the body's status, and its error when there is one


@dataclass(frozen=True, kw_only=True)
class Completion:
    """The parts of a ``/v1/completions`` reply the check compares."""

    tokens: tuple[int, ...]
    finish_reason: str
    text: str


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # no proxy, no .netrc: the server is on 127.0.0.1
    return s


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _json_body(resp: requests.Response, what: str) -> dict[str, Any]:
    try:
        data = json.loads(resp.text)
    except json.JSONDecodeError as exc:
        raise VerifyError(f"{what} answered {resp.status_code} with a body that is not JSON "
                          f"({exc.msg}): {_short(resp.text)!r}") from exc
    if not isinstance(data, dict):
        raise VerifyError(f"{what} answered {resp.status_code} with JSON that is not an "
                          f"object: {_short(resp.text)!r}")
    return data


def health(base: str, *, timeout: float) -> Health:
    """``GET base/health``."""
    what = "GET /health"
    try:
        with _session() as s:
            resp = s.get(f"{base}/health", timeout=timeout)
    except requests.RequestException as exc:
        raise VerifyError(f"{what} failed: {exc}") from exc
    data = _json_body(resp, what)
    status = str(data.get("status", ""))
    detail = f"status {status!r}" if status else "no status field"
    if data.get("error"):
        detail += f", error {_short(str(data['error']))!r}"
    return Health(status=resp.status_code, ok=resp.status_code == 200 and status == "ok",
                  detail=detail)


def complete(base: str, prompt: str, max_tokens: int, *, timeout: float) -> Completion:
    """One greedy ``POST base/v1/completions`` of ``prompt`` that returns its token ids.

    ``ignore_eos`` asks the server to go on past an end-of-generation token, as the smoke
    run the check compares with does (``--ignore-eos``); docs/server.md does not list it,
    and unknown fields are ignored, so a server without it may stop early (which the check then
    reports as such)."""
    what = "POST /v1/completions"
    payload = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
               "return_tokens": True, "ignore_eos": True}
    try:
        with _session() as s:
            resp = s.post(f"{base}/v1/completions", json=payload, timeout=timeout)
    except requests.RequestException as exc:
        raise VerifyError(f"{what} failed: {exc}") from exc
    data = _json_body(resp, what)
    if resp.status_code != 200:
        err = data.get("error")
        message = err.get("message") if isinstance(err, dict) else err
        raise VerifyError(f"{what} answered {resp.status_code}: "
                          f"{_short(str(message if message is not None else resp.text))}")
    try:
        choice = data["choices"][0]
        tokens = tuple(int(t) for t in choice["tokens"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise VerifyError(f"{what} answered without choices[0].tokens (return_tokens): "
                          f"{_short(resp.text)!r}") from exc
    return Completion(tokens=tokens, finish_reason=str(choice.get("finish_reason", "")),
                      text=str(choice.get("text", "")))

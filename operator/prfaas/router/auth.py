"""Optional client authentication: ``Authorization: Bearer <key>`` on the OpenAI routes, the
keys one per line in a file (a mounted Secret), re-read when the file changes so a rotated
Secret takes effect without a restart. Keys are compared in constant time and never logged."""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

log = logging.getLogger("prfaas.router")
_RECHECK_S = 1.0  # how often the file's mtime is looked at (not on every request)


class KeyFileError(ValueError):
    """The key file cannot be read or holds no key."""


def read_keys(path: Path) -> tuple[bytes, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read API key file {path}: {type(exc).__name__}") from None
    keys = tuple(k.strip().encode() for k in text.splitlines() if k.strip())
    if not keys:
        raise KeyFileError(f"API key file {path} holds no key")
    return keys


class ApiKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = read_keys(path)
        self._stamp = _stamp(path)
        self._checked = time.monotonic()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < _RECHECK_S:
            return
        self._checked = now
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        try:
            self._keys = read_keys(self.path)
        except KeyFileError as exc:  # a half-written Secret: keep the keys we have
            log.error("%s; keeping the %d keys read before", exc, len(self._keys))
            return
        self._stamp = stamp
        log.info("API key file re-read: %d keys", len(self._keys))

    def allows(self, authorization: str | None) -> bool:
        """``authorization`` (the header) is ``Bearer <one of the keys>``."""
        self._refresh()
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        ok = False
        for key in self._keys:  # every key compared: the time says nothing of which matched
            ok |= hmac.compare_digest(given, key)
        return ok


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()  # follows the symlinks a mounted Secret swaps on update
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)

"""Where the router may send prompts, as the platform (not a PDCluster's author) says: entries of
``--allow-endpoint``, each a CIDR (``10.8.0.0/16``: hosts written as IP addresses in it), a host
with an optional port (``pool.example.net``, ``pool.example.net:8000``, ``*.svc.cluster.local``:
host names as written, no DNS lookup) or a URL prefix (``https://pool.example.net/v1``).

Engines found from EndpointSlices (by the router for its local groups, by the operator for a
PrefillPool: ``discovered`` in the published policy) are allowed whatever the list says; every
other endpoint of the policy must match an entry. The entry ``any`` allows every http(s)
endpoint. An empty list allows nothing when the policy comes from a PDCluster (whoever may write
one must not choose where prompts go) and everything for ``--policy-file`` (a file on the
router's own disk: the platform wrote it)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit


class AllowError(ValueError):
    """An entry that is neither a CIDR, a host[:port] nor an http(s) URL prefix."""


@dataclass(frozen=True, slots=True)
class _Host:
    host: str  # lower case; "*.suffix" matches names under suffix
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


class Allowlist:
    def __init__(self, entries: Iterable[str] = (), closed: bool = False) -> None:
        """``closed``: an empty list allows nothing (else: anything)."""
        self.entries = tuple(entries)
        self.closed = closed
        self.any = False
        self._nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._hosts: list[_Host] = []
        self._prefixes: list[str] = []
        for e in self.entries:
            self._add(e.strip())

    def _add(self, entry: str) -> None:
        if entry == "any":
            self.any = True
            return
        if "://" in entry:
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise AllowError(f"not an http(s) URL prefix: {entry!r}")
            self._prefixes.append(entry if parts.path else entry.rstrip("/") + "/")
            return
        try:
            self._nets.append(ipaddress.ip_network(entry, strict=False))
            return
        except ValueError:
            pass
        host, sep, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
        label = host.removeprefix("*.")
        if not host or (sep and not port.isdigit()) or not label or "/" in host or " " in host:
            raise AllowError(f"expected a CIDR, HOST[:PORT] or URL prefix, got {entry!r}")
        self._hosts.append(_Host(host.lower(), int(port) if sep else None))

    def allows(self, url: str) -> bool:
        """``url`` (a valid http(s) URL) matches an entry; an empty list: not ``closed``."""
        if self.any:
            return True
        if not self.entries:
            return not self.closed
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        if any(h.matches(host, port) for h in self._hosts):
            return True
        if any(_under(url, p) for p in self._prefixes):
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._nets)


def _under(url: str, prefix: str) -> bool:
    """``url`` starts with ``prefix`` at a boundary (``http://a:1`` is not under ``http://a``)."""
    if not prefix.endswith("/"):
        return url == prefix or url.startswith(prefix + "/")
    return url.startswith(prefix) or url + "/" == prefix

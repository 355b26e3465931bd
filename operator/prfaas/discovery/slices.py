"""EndpointSlices (``discovery.k8s.io/v1``) → the engine URLs to route to. Pure: plain dicts in.

An endpoint takes new requests iff it is ready (``conditions.ready``; unset means true) and not
terminating (unset means false), which is how the API defines the conditions. A terminating
endpoint that still serves is *draining*: what is in flight there finishes, nothing new is sent.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_FQDN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    url: str
    ready: bool  # takes new requests: ready and not terminating
    terminating: bool


def port_of(ports: Any, name: str | None) -> int | None:
    """The TCP port to use: the one named ``name``; without a name, the only one, else the one
    named ``http``. None: the slice has no such port."""
    if not isinstance(ports, list):
        return None
    tcp = [p for p in ports if isinstance(p, Mapping) and p.get("protocol", "TCP") == "TCP"]
    if name is None and len(tcp) == 1:
        chosen: Mapping[str, Any] | None = tcp[0]
    else:
        wanted = name or "http"
        chosen = next((p for p in tcp if p.get("name", "") == wanted), None)
    port = chosen.get("port") if chosen is not None else None
    valid = isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
    return port if valid else None


def _host(address: Any, kind: Any) -> str | None:
    """``address`` as the host part of a URL, or None when it is not what ``kind`` says."""
    if not isinstance(address, str):
        return None
    if kind in ("IPv4", "IPv6"):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if (ip.version == 4) != (kind == "IPv4"):
            return None
        return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    if kind == "FQDN" and len(address) <= 253 and _FQDN.match(address):
        return address
    return None


def endpoints_of(eps: Mapping[str, Any], port: str | None, scheme: str) -> list[SliceEndpoint]:
    """The endpoints of one EndpointSlice; an endpoint uses its first address (the API makes
    them fungible), and a slice without the port or with a malformed address yields nothing."""
    number = port_of(eps.get("ports"), port)
    found: list[SliceEndpoint] = []
    endpoints = eps.get("endpoints")
    if number is None or not isinstance(endpoints, list):
        return found
    for ep in endpoints:
        if not isinstance(ep, Mapping) or not isinstance(ep.get("addresses"), list):
            continue
        addresses = ep["addresses"]
        host = _host(addresses[0], eps.get("addressType")) if addresses else None
        if host is None:
            continue
        cond = ep.get("conditions")
        cond = cond if isinstance(cond, Mapping) else {}
        terminating = cond.get("terminating") is True
        ready = cond.get("ready") is not False and not terminating
        found.append(SliceEndpoint(f"{scheme}://{host}:{number}", ready, terminating))
    return found


def ready_urls(
    slices: Iterable[Mapping[str, Any]], port: str | None, scheme: str
) -> tuple[str, ...]:
    """Every endpoint that takes new requests, sorted. An endpoint listed by several slices
    (while the controller moves it) is ready only if no slice says it is terminating or not
    ready: better one request fewer there than one sent to a pod on its way out."""
    state: dict[str, bool] = {}
    for eps in slices:
        for ep in endpoints_of(eps, port, scheme):
            state[ep.url] = state.get(ep.url, True) and ep.ready
    return tuple(sorted(u for u, ready in state.items() if ready))

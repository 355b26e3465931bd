"""Which hosts an engine may pull a KVCache from: the ones it was told about (``--kv-peer``).

Decode learns where the KVCache is from the request (``kv_transfer_params.remote_host`` or
``bootstrap_host``). A client could name any address there and use the engine as a port scanner,
so the host must be an IP inside an allowed network or a name given exactly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

LOOPBACK = ("127.0.0.0/8", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class KVPeers:
    def __init__(self, allowed: Iterable[str] = LOOPBACK) -> None:
        self.networks: list[Network] = []
        self.names: set[str] = set()
        for item in allowed:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.names.add(item.lower().rstrip("."))

    def allows(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host.lower().rstrip(".") in self.names
        return any(ip in net for net in self.networks)

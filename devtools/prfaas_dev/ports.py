"""The one port picker of the dev tooling: free loopback ports for processes we start.

Ports are taken below Linux's ephemeral range (32768+ by default), where the kernel never hands
one to an outgoing connection while the process that will bind it is still starting (an engine
slot of the demo binds its port minutes later, when the operator scales up), and never twice in
this Python process, so a caller picking several at once gets distinct ones. Another process can
still take one first: starters that care (the control plane) retry on "address already in use".
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20_000, 32_000
_GIVEN: set[int] = set()


class NoFreePortError(RuntimeError):
    """No free port left in the range."""


def free_port() -> int:
    """A loopback port that is free now and that this process has not handed out before."""
    for _ in range(1000):
        port = random.randrange(LOW, HIGH)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise NoFreePortError(f"no free port in {LOW}-{HIGH}")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports."""
    return [free_port() for _ in range(n)]

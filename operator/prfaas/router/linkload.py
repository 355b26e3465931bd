"""The link's load as the pool side reports it: the same for every router replica.

A router that meters only its own KV transfers sees 1/N of the link when N replicas (or worker
processes) share it, and together they overrun it. So each pool engine's ``/metrics`` (scraped
anyway, for health and queues) is read for two more series: KV bytes it offered to decode
(``prfaas_engine_kv_offered_bytes_total``, nominal, a counter) and bytes offered and not sent
yet (``prfaas_engine_kv_pending_bytes``). Per pool, the sum of the counters' increases since
the last scrape is the link's egress, every replica's included; the sum of the gauges is what
it holds. The routing core takes these in place of its own accounting (``Router.reported``),
plus its own bytes sent since the reading. Staleness: one scrape interval (default 1 s) of the
other replicas' new transfers.

A pool none of whose engines reports (engines that do not export these series, or none
answered the scrape) falls back to the router's own accounting. A pool shared by several PD
clusters over separate links is read whole: conservative, it offloads less.
"""

from __future__ import annotations

from collections.abc import Sequence

from prfaas import metric_names
from prfaas.router.fleet import Engine, Fleet

OFFERED = metric_names.ENGINE_KV_OFFERED + "_total"
PENDING = metric_names.ENGINE_KV_PENDING


def parse(text: str) -> tuple[float | None, float | None]:
    """The engine's KV offered (counter) and pending (gauge) in a Prometheus exposition; None
    for a series it does not export."""
    offered = pending = None
    for line in text.splitlines():
        if not line.startswith("prfaas_engine_kv_"):
            continue
        name, _, value = line.partition(" ")
        try:
            v = float(value.split()[0])
        except (ValueError, IndexError):
            continue
        if name == OFFERED:
            offered = v
        elif name == PENDING:
            pending = v
    return offered, pending


def read(engine: Engine, text: str) -> None:
    """Keep ``engine``'s new reading and how much it offered since the last one (a counter
    that went back restarted: all of it is new; a first reading only sets the baseline)."""
    offered, engine.kv_pending = parse(text)
    last, engine.kv_offered = engine.kv_offered, offered
    if offered is None or last is None:
        engine.kv_new = 0.0
    else:
        engine.kv_new = offered - last if offered >= last else offered


def forget(engine: Engine) -> None:
    """No reading this round (the scrape failed): nothing from it counts."""
    engine.kv_pending = None
    engine.kv_new = 0.0


def report(fleet: Fleet) -> None:
    """Each pool's reading into the routing core, after a round of scrapes."""
    policy = fleet.policy
    if policy is None:
        return
    for i, route in enumerate(policy.pools):
        nbytes, pending = pool_reading([fleet.engines[u] for u in route.endpoints])
        fleet.core.reported(i, nbytes, pending)


def pool_reading(engines: Sequence[Engine]) -> tuple[float | None, float | None]:
    """Offered since the last reading and pending, summed over the engines that reported this
    round; (None, None) when none did."""
    live = [e for e in engines if e.kv_pending is not None]
    if not live:
        return None, None
    return sum(e.kv_new for e in live), sum(e.kv_pending or 0.0 for e in live)

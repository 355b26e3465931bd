"""What the demo watches while PrfaaS runs: the PDCluster's status (the slow loop), the router's
and the link's ``/metrics`` (the fast loop), the engines that run; changes go to the timeline.

Where the engines run (local processes, or pods in kind clusters) the caller says, by the
readers it passes: engines ready per group, and the link's byte counter."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prfaas_dev.demo.view import Snapshot


def http_text(url: str, timeout: float = 1.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def metric_sum(text: str, name: str) -> float | None:
    """Sum of every series of ``name`` in a Prometheus text exposition (None: absent)."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rpartition(" ")[2])
            seen = True
    return total if seen else None


@dataclass
class LinkMeter:
    """Nominal Gbps on the link from the relay's byte counter (scaled bytes per wall second)."""

    scale: float  # kv_byte_scale × speedup
    nbytes: float | None = None
    t: float = 0.0
    gbps: float | None = None
    capacity: float = 100.0
    history: list[tuple[float, float]] = field(default_factory=list)

    def update(self, nbytes: float | None, now: float) -> None:
        if nbytes is not None and self.nbytes is not None and now > self.t:
            gbps = (nbytes - self.nbytes) / (now - self.t) / self.scale * 8 / 1e9
            self.gbps = gbps if self.gbps is None else 0.7 * self.gbps + 0.3 * gbps
            self.history.append((now, self.gbps))
        self.nbytes, self.t = nbytes, now

    def mean(self, start: float, end: float) -> float | None:
        xs = [g for t, g in self.history if start <= t < end]
        return sum(xs) / len(xs) if xs else None


@dataclass
class Watcher:
    read_pdcluster: Callable[[], dict[str, Any]]
    read_ready: Callable[[], dict[str, int]]  # h200-prefill, h20-prefill, h20-decode → running
    router_url: str
    read_link_bytes: Callable[[], float | None]
    link: LinkMeter
    speedup: float
    log: Callable[[str], None]
    _seen: dict[str, Any] = field(default_factory=dict)

    def sample(self, s: Snapshot) -> None:
        ready = self.read_ready()
        st = self.read_pdcluster().get("status") or {}
        rp, plan, sig = st.get("routingPolicy") or {}, st.get("plan") or {}, st.get("signals")
        s.policy_version, s.threshold = rp.get("version"), rp.get("thresholdTokens")
        s.n_pool = f"{ready['h200-prefill']}/{plan.get('nPrfaas', '-')}"
        s.n_prefill = f"{ready['h20-prefill']}/{plan.get('nPrefill', '-')}"
        s.n_decode = f"{ready['h20-decode']}/{plan.get('nDecode', '-')}"
        if sig:
            rate = sig.get("arrivalRateRps")
            s.signals = sig["source"] + (f", {rate / self.speedup:.2f} req/s" if rate else "")
            if self._seen.get("source") != sig["source"]:
                self._seen["source"] = sig["source"]
                self.log(f"operator signals: {s.signals}")
        self._changes(s, st, tuple(ready.values()), plan)
        metrics = http_text(self.router_url + "/metrics")
        s.threshold_eff = metric_sum(metrics, "prfaas_router_threshold_tokens")
        s.fallbacks = metric_sum(metrics, "prfaas_router_fallbacks_total") or 0.0
        self.link.update(self.read_link_bytes(), time.monotonic())
        s.link_gbps, s.link_capacity_gbps = self.link.gbps, self.link.capacity

    def _changes(
        self, s: Snapshot, st: dict[str, Any], ready: tuple[int, ...], plan: dict[str, Any]
    ) -> None:
        seen = self._seen
        key = (s.policy_version, s.threshold, plan.get("nPrefill"), plan.get("nDecode"))
        if seen.get("policy") != key:
            seen["policy"] = key
            self.log(f"policy v{key[0]}: t = {key[1]}, planned PD-P/PD-D {key[2]}/{key[3]}")
        if seen.get("ready") != ready:
            seen["ready"] = ready
            self.log(f"running: pool {ready[0]}, PD-P {ready[1]}, PD-D {ready[2]}")
        for c in st.get("conditions") or []:
            kind, state = c.get("type"), (c.get("status"), c.get("reason"))
            if kind not in ("PlanApplied", "Degraded") or seen.get(kind) == state:
                continue
            seen[kind] = state
            if kind == "PlanApplied" or state[0] == "True":
                self.log(f"{kind}={state[0]} ({state[1]}): {(c.get('message') or '')[:70]}")

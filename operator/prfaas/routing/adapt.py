"""The short-timescale loop (paper §3.4.3): between slow-loop updates, per PrefillPool,

- switch bandwidth scarce/abundant with hysteresis (``ModeThresholds``);
- move the effective threshold ``t_eff = t × factor`` (``AdaptationConfig``): up when the link or
  the pool queue surges, down when only the local side is swamped and the link has headroom,
  back towards ``t`` when the signals clear.

The router calls ``observe`` on its telemetry cadence (not per request); the simulator calls it
on a timer with the same signals. ``observe`` is rate-limited to ``interval_s`` per change.

A pool that is not usable (down, no healthy instance, link down) holds ``t_eff = t``: ``decide``
already keeps its work local, and its signals then say nothing about the pool (an empty queue
over no instances is infinite, a link at 0 Gbps is fully used), so raising t there would only
keep long prompts local after the pool is back.
"""

from __future__ import annotations

from prfaas.routing.config import RoutingConfig
from prfaas.routing.state import LiveState, Mode, PoolState


class Adapter:
    def __init__(self, config: RoutingConfig) -> None:
        self.config = config

    def observe(self, now: float, live: LiveState) -> None:
        """Update every pool's mode and threshold factor from the live signals at ``now``."""
        if not self.config.adaptive:
            return
        local_queue = live.local.queue_per_instance()
        for ps in live.pools:
            if not ps.usable():
                ps.factor = 1.0  # nothing to adapt; offloads resume at t once it is back
                continue
            self._mode(ps)
            if self.config.adapt.enabled:
                self._factor(now, ps, local_queue)

    def _mode(self, ps: PoolState) -> None:
        m = self.config.mode
        u, q = ps.link.utilisation(), ps.target.queue_per_instance()
        if ps.mode == Mode.ABUNDANT and (u >= m.scarce_utilisation or q >= m.scarce_queue):
            ps.mode = Mode.SCARCE
        elif (
            ps.mode == Mode.SCARCE
            and m.cache_transfers
            and u <= m.abundant_utilisation
            and q <= m.abundant_queue
        ):
            ps.mode = Mode.ABUNDANT

    def _factor(self, now: float, ps: PoolState, local_queue: float) -> None:
        a = self.config.adapt
        if now - ps.last_change < a.interval_s:
            return
        u, b, q = ps.link.utilisation(), ps.link.backlog_seconds(), ps.target.queue_per_instance()
        local_busy = local_queue >= a.raise_queue
        local_idle = local_queue <= a.relax_queue
        link_hot = u >= a.raise_utilisation or b >= a.raise_backlog_s
        # a queue only counts against the other side when that side has room: when both are
        # swamped (a burst beyond total capacity) shifting work to the slower hardware cannot
        # help, and the slow loop's balance stands
        pool_surge = q >= a.raise_queue and local_queue + a.queue_margin <= q and local_idle
        local_surge = local_busy and q <= a.relax_queue and not link_hot
        cleared = u <= a.relax_utilisation and b < a.raise_backlog_s and q <= a.relax_queue
        old = ps.factor
        if (link_hot and not local_busy) or pool_surge:
            ps.factor = min(ps.factor * a.step_up, a.max_factor)
        elif local_surge:
            ps.factor = max(ps.factor / a.step_up, a.min_factor)
        elif (cleared and local_idle) or (local_busy and (link_hot or q >= a.raise_queue)):
            ps.factor = _towards_plan(ps.factor, a.step_down)  # cleared, or every side is busy
        if ps.factor != old:
            ps.last_change = now

    def reset(self, live: LiveState) -> None:
        """A new slow-loop policy supersedes the short-term correction."""
        for ps in live.pools:
            ps.factor = 1.0


def _towards_plan(factor: float, step: float) -> float:
    """One step of ``factor`` back towards 1 (t_eff = t), never past it."""
    if factor > 1.0:
        return max(1.0, factor / step)
    if factor < 1.0:
        return min(1.0, factor * step)
    return factor

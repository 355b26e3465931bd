"""Knobs of the short-timescale loop. The paper gives none of these numbers (digest §11); the
defaults below are ours, chosen on the case study in the simulator and documented here.

Signals, per PrefillPool, all router-observable:

- ``u``  link utilisation: recent egress / usable bandwidth (min of the policy budget and the
  measured capacity);
- ``b``  link backlog: KV bytes in flight / usable bandwidth, in seconds;
- ``q``  pool queue depth: requests waiting (not yet computing) per healthy pool instance;
- ``ql`` the same for the local PD-P instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ModeThresholds:
    """Bandwidth scarce vs abundant (paper §3.4.3), with hysteresis so the mode does not flap.

    Scarce as soon as ``u >= scarce_utilisation`` or ``q >= scarce_queue``; abundant again only
    once ``u <= abundant_utilisation`` and ``q <= abundant_queue``. The case study runs at ~13%
    utilisation: abundant. A cross-cluster cache transfer costs egress, so it is only worth it
    well below the level where the link starts to queue (~60%).
    """

    scarce_utilisation: float = 0.6
    abundant_utilisation: float = 0.4
    scarce_queue: float = 2.0
    abundant_queue: float = 0.5
    initial_abundant: bool = True
    # False: always scarce. For data planes that cannot move a cached prefix between
    # clusters (the HTTP router's P/D hand-off ships prefill→decode KV only).
    cache_transfers: bool = True

    @property
    def starts_abundant(self) -> bool:
        return self.initial_abundant and self.cache_transfers

    def __post_init__(self) -> None:
        if not 0 <= self.abundant_utilisation <= self.scarce_utilisation:
            raise ValueError("need 0 <= abundant_utilisation <= scarce_utilisation")
        if not 0 <= self.abundant_queue <= self.scarce_queue:
            raise ValueError("need 0 <= abundant_queue <= scarce_queue")


@dataclass(frozen=True, slots=True)
class AdaptationConfig:
    """The effective threshold ``t_eff = t × factor`` between slow-loop updates, at most one
    step per ``interval_s``:

    - raise (×``step_up``, up to ``max_factor``): the link runs hot (``u >= raise_utilisation``,
      ``u`` an EWMA over ``utilisation_window_s``, or backlog ``b >= raise_backlog_s``) while the
      local side is not busy (``ql < raise_queue``); or the pool queue surges
      (``q >= raise_queue`` and ``q >= ql + queue_margin``) while the local side idles
      (``ql <= relax_queue``). Longer requests carry less KV per second of compute, so
      raising t eases the link and moves the marginal work to where there is room;
    - lower (÷``step_up``, down to ``min_factor``): the local side is busy while the pool idles
      (``q <= relax_queue``) and the link is not hot;
    - back towards ``t`` (by ``step_down``): once the signals clear (``u <= relax_utilisation``,
      ``b < raise_backlog_s``, ``q`` and ``ql <= relax_queue``), or when *both* sides are busy
      (a burst beyond total capacity: shifting work cannot help, the slow loop's balance is the
      best split);
    - otherwise hold (the band between the raise and relax levels is the hysteresis).

    Raises are quicker than relaxes: congestion on a link costs every transfer on it, an
    over-cautious threshold only costs some local work. Independently, ``decide`` keeps an
    offload local outright while the link backlog exceeds ``max_backlog_s``.
    """

    enabled: bool = True
    interval_s: float = 1.0
    utilisation_window_s: float = 10.0
    raise_utilisation: float = 0.9
    raise_backlog_s: float = 1.0
    raise_queue: float = 1.5
    queue_margin: float = 1.0
    relax_utilisation: float = 0.6
    relax_queue: float = 0.5
    step_up: float = 1.1
    step_down: float = 1.05
    max_factor: float = 8.0
    min_factor: float = 0.7
    max_backlog_s: float = 4.0

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.utilisation_window_s <= 0:
            raise ValueError("interval_s and utilisation_window_s must be > 0")
        if self.step_up <= 1 or self.step_down <= 1:
            raise ValueError("step_up and step_down must be > 1")
        if not 0 < self.min_factor <= 1 <= self.max_factor:
            raise ValueError("need 0 < min_factor <= 1 <= max_factor")
        if self.relax_utilisation > self.raise_utilisation:
            raise ValueError("relax_utilisation must not exceed raise_utilisation")


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Everything ``decide`` and ``Adapter`` read besides the policy and the live state.

    ``affinity_slack`` (in the instances' load unit; the router and simulator use outstanding
    uncached tokens): the cache-affine instance is chosen unless it carries more than this above
    the least-loaded one. ``adaptive=False`` is the paper's static rule: fixed ``t``, scarce mode
    (each cluster's cache judged on its own), no backlog guard; health fail-open stays on.
    """

    mode: ModeThresholds = field(default_factory=ModeThresholds)
    adapt: AdaptationConfig = field(default_factory=AdaptationConfig)
    affinity_slack: float = 4096.0
    adaptive: bool = True

    @classmethod
    def static(cls) -> RoutingConfig:
        return cls(
            mode=ModeThresholds(initial_abundant=False),
            adapt=AdaptationConfig(enabled=False),
            adaptive=False,
        )

"""The per-request decision (paper §3.3 and §3.4.3): where to prefill, with which cache.

Rules, in order:

1. No threshold for any pool (each pool has its own t, or the policy's) → local.
2. Fail open: pools that are unhealthy, have no healthy instance, or whose link is down are
   skipped; with none left the request is prefilled locally, never dropped. (Only when there is
   no healthy local prefill instance either is it rejected.)
3. Per usable pool k, its threshold ``t_eff,k = t_k × factor_k`` (short-timescale adaptation,
   ``adapt``) and its mode decide whether k would take the request:
   bandwidth scarce (each cluster's cache judged on its own): ``l_total − l_pd > t_eff,k``;
   bandwidth abundant (best cache anywhere): ``l_total − max(l_k, l_pd) > t_eff,k``, and when
   the longer cache lives in the other cluster, a cross-cluster cache transfer of it is part of
   the decision.
4. Backlog guard (adaptive only): a pool whose link backlog exceeds ``max_backlog_s`` takes no
   offload now. Standby pools (``PoolRoute.standby``: reachable, but not in the plan) are
   considered only while no primary pool is usable.
5. Among the pools that would take it: the longest cached prefix (cache-affine), then a link
   with headroom (utilisation below ``raise_utilisation``), then the shortest queue per instance,
   then the least utilised link. None → local (``short``, or ``backlog`` if only the guard
   stopped it).
6. Inside the chosen cluster: the cache-affine instance unless it is more than
   ``affinity_slack`` above the least-loaded healthy instance, else the least-loaded one.

Cost: O(pools + instances), one small allocation (the ``Decision``); prefix lookups (O(blocks))
are the caller's, through ``PrefixIndex.match``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from prfaas.routing.config import RoutingConfig
from prfaas.routing.policy import RoutingPolicy
from prfaas.routing.prefix import MISS, PrefixHit
from prfaas.routing.state import InstanceState, LiveState, Mode, PoolState

_DEFAULT = RoutingConfig()


class Target(enum.IntEnum):
    REJECT = -1  # nowhere to prefill (no healthy local instance and no usable pool)
    LOCAL = 0  # a PD-P instance of the local PD cluster
    POOL = 1  # a PrefillPool instance; the KV crosses the link


class Reason(enum.StrEnum):
    NO_OFFLOAD = "no-offload"  # the policy has no threshold or no pool
    SHORT = "short"  # uncached length ≤ t_eff
    LONG = "long"  # uncached length > t_eff: offloaded
    FAIL_OPEN = "fail-open"  # would offload, but no pool/link is usable
    BACKLOG = "backlog"  # would offload, but the link backlog is too long
    NO_LOCAL = "no-local"  # local target has no healthy instance: offloaded instead
    REJECTED = "rejected"  # nowhere to go


@dataclass(frozen=True, slots=True)
class Decision:
    target: Target
    pool: int  # index into policy.pools / live.pools, -1 when local
    instance: int  # index into the target's instances, -1 when rejected
    cached_tokens: int  # prefix reused by the prefill (after any cache transfer)
    uncached_tokens: int  # tokens the prefill computes
    transfer_tokens: int  # cross-cluster cache transfer, from the non-target cluster (0: none)
    threshold_tokens: int | None  # t_eff used
    mode: Mode
    reason: Reason
    policy_version: int


def choose_instance(instances: Sequence[InstanceState], affine: int, slack: float) -> int:
    """Cache-affine first (within ``slack`` of the least load), then least loaded; -1: none."""
    best, best_load = -1, math.inf
    for k, inst in enumerate(instances):
        if inst.healthy and inst.load < best_load:
            best, best_load = k, inst.load
    if 0 <= affine < len(instances):
        a = instances[affine]
        if a.healthy and a.load <= best_load + slack:
            return affine
    return best


_REFUSED, _BACKLOGGED = -1, -2


def _takes(ps: PoolState, t: int, hit: int, total: int, l_pd: int, config: RoutingConfig) -> int:
    """``t_eff`` if the pool would take the request, else ``_REFUSED`` (short enough to stay
    local) or ``_BACKLOGGED`` (its link backlog is too long for now)."""
    adaptive = config.adaptive
    t_eff = ps.threshold(t) if adaptive else t
    cached = hit if adaptive and ps.mode == Mode.ABUNDANT and hit > l_pd else l_pd
    if total - cached <= t_eff:
        return _REFUSED
    guard = adaptive and config.adapt.enabled
    if guard and ps.link.backlog_seconds() > config.adapt.max_backlog_s:
        return _BACKLOGGED
    return t_eff


def _better_offload(
    hit: int, ps: PoolState, best_hit: int, best: PoolState | None, hot: float
) -> bool:
    """Longest cache, then link headroom, then shortest queue, then least link utilisation."""
    if best is None or hit != best_hit:
        return best is None or hit > best_hit
    u, bu = ps.link.utilisation(), best.link.utilisation()
    if (u >= hot) != (bu >= hot):
        return bu >= hot
    q, bq = ps.target.queue_per_instance(), best.target.queue_per_instance()
    return q < bq if q != bq else u < bu


def decide(
    total_tokens: int,
    local_hit: PrefixHit,
    pool_hits: Sequence[PrefixHit],
    policy: RoutingPolicy,
    live: LiveState,
    config: RoutingConfig = _DEFAULT,
) -> Decision:
    """Route one request of ``total_tokens`` prompt tokens.

    ``local_hit`` is the local PD cluster's usable cached prefix; ``pool_hits[i]`` that of
    ``policy.pools[i]`` (missing entries count as no cache). ``live.pools`` is aligned with
    ``policy.pools``.
    """
    scan = _scan(total_tokens, local_hit.tokens, pool_hits, policy, live, config, False)
    if scan[1] < 0 and policy.has_standby:  # every primary pool is down: the standby ones
        spare = _scan(total_tokens, local_hit.tokens, pool_hits, policy, live, config, True)
        scan = (scan[0] if spare[0] is None else spare[0], *spare[1:])
    lowest_t, fallback, fb_hit, j, j_hit, j_t, backlogged = scan
    l_pd = local_hit.tokens
    if lowest_t is None:
        return _place_local(total_tokens, local_hit, 0, Reason.NO_OFFLOAD, None, Mode.SCARCE,
                            policy, live, config, -1, MISS)  # fmt: skip
    if fallback < 0:  # every pool is down: fail open, and say so if it would have been offloaded
        reason = Reason.FAIL_OPEN if total_tokens - l_pd > lowest_t else Reason.SHORT
        return _place_local(total_tokens, local_hit, 0, reason, lowest_t, Mode.SCARCE, policy,
                            live, config, -1, MISS)  # fmt: skip
    if j < 0:
        return _stay_local(total_tokens, local_hit, backlogged, policy, live, config,
                           fallback, fb_hit)  # fmt: skip
    return _offload(total_tokens, local_hit, j, j_hit, j_t, policy, live, config)


_Scan = tuple[int | None, int, PrefixHit, int, PrefixHit, int, bool]


def _scan(
    total: int,
    l_pd: int,
    pool_hits: Sequence[PrefixHit],
    policy: RoutingPolicy,
    live: LiveState,
    config: RoutingConfig,
    standby: bool,
) -> _Scan:
    """One pass over the primary (or the standby) pools: the lowest threshold among them, the
    best usable one (fallback), the one that takes the request (-1: none), whether a backlog
    stopped one."""
    hot = config.adapt.raise_utilisation
    lowest_t: int | None = None
    fallback, fb_hit, fb_queue = -1, MISS, math.inf
    j, j_hit, j_t = -1, MISS, 0
    backlogged = False
    for i, ps in enumerate(live.pools):
        t = policy.threshold_for(i) if i < len(policy.pools) else None
        if t is None or policy.pools[i].standby != standby:
            continue
        lowest_t = t if lowest_t is None or t < lowest_t else lowest_t
        if not ps.usable():
            continue
        hit = pool_hits[i] if i < len(pool_hits) else MISS
        queue = ps.target.queue_per_instance()
        if fallback < 0 or (hit.tokens, -queue) > (fb_hit.tokens, -fb_queue):
            fallback, fb_hit, fb_queue = i, hit, queue
        t_eff = _takes(ps, t, hit.tokens, total, l_pd, config)
        backlogged |= t_eff == _BACKLOGGED
        best = live.pools[j] if j >= 0 else None
        if t_eff >= 0 and _better_offload(hit.tokens, ps, j_hit.tokens, best, hot):
            j, j_hit, j_t = i, hit, t_eff
    return lowest_t, fallback, fb_hit, j, j_hit, j_t, backlogged


def _stay_local(
    total: int,
    local_hit: PrefixHit,
    backlogged: bool,
    policy: RoutingPolicy,
    live: LiveState,
    config: RoutingConfig,
    fallback: int,
    fb_hit: PrefixHit,
) -> Decision:
    """No pool takes it: local, with the best pool's longer cache moved across when abundant."""
    ps = live.pools[fallback]
    t = policy.threshold_for(fallback)
    assert t is not None
    adaptive = config.adaptive
    t_eff = ps.threshold(t) if adaptive else t
    mode = ps.mode if adaptive else Mode.SCARCE
    transfer = 0
    if not backlogged and mode == Mode.ABUNDANT and fb_hit.tokens > local_hit.tokens:
        transfer, local_hit = fb_hit.tokens, PrefixHit(fb_hit.tokens, local_hit.instance)
    reason = Reason.BACKLOG if backlogged else Reason.SHORT
    return _place_local(total, local_hit, transfer, reason, t_eff, mode, policy, live, config,
                        fallback, fb_hit)  # fmt: skip


def _offload(
    total: int,
    local_hit: PrefixHit,
    j: int,
    j_hit: PrefixHit,
    t_eff: int,
    policy: RoutingPolicy,
    live: LiveState,
    config: RoutingConfig,
) -> Decision:
    ps = live.pools[j]
    mode = ps.mode if config.adaptive else Mode.SCARCE
    remote_transfer, remote_hit = 0, j_hit
    if mode == Mode.ABUNDANT and local_hit.tokens > j_hit.tokens:  # ship the local cache over
        remote_transfer = local_hit.tokens
        remote_hit = PrefixHit(local_hit.tokens, j_hit.instance)
    c = remote_hit.tokens
    return Decision(
        target=Target.POOL,
        pool=j,
        instance=choose_instance(ps.target.instances, remote_hit.instance, config.affinity_slack),
        cached_tokens=c,
        uncached_tokens=total - c,
        transfer_tokens=remote_transfer,
        threshold_tokens=t_eff,
        mode=mode,
        reason=Reason.LONG,
        policy_version=policy.version,
    )


def decide_local(
    total_tokens: int,
    local_hit: PrefixHit,
    policy: RoutingPolicy,
    live: LiveState,
    config: RoutingConfig = _DEFAULT,
) -> Decision:
    """Fail open for one request: a local PD-P instance whatever its length (a pool that timed
    out, or whose KVCache was lost); rejected only when no local instance is healthy."""
    return _place_local(total_tokens, local_hit, 0, Reason.FAIL_OPEN, policy.threshold_tokens,
                        Mode.SCARCE, policy, live, config, -1, MISS)  # fmt: skip


def _place_local(
    total: int,
    hit: PrefixHit,
    transfer: int,
    reason: Reason,
    t: int | None,
    mode: Mode,
    policy: RoutingPolicy,
    live: LiveState,
    cfg: RoutingConfig,
    fallback: int,
    fallback_hit: PrefixHit,
) -> Decision:
    """A PD-P instance; with none healthy, the fallback pool (if any) rather than a rejection."""
    target, pool, k, c = Target.LOCAL, -1, -1, hit.tokens
    if live.local.healthy:
        k = choose_instance(live.local.instances, hit.instance, cfg.affinity_slack)
    if k < 0 and fallback >= 0:  # fail open the other way: better remote than nowhere
        ps = live.pools[fallback]
        k = choose_instance(ps.target.instances, fallback_hit.instance, cfg.affinity_slack)
        target, pool, c = Target.POOL, fallback, fallback_hit.tokens
        transfer, reason = 0, Reason.NO_LOCAL
    if k < 0:
        target, pool, c, transfer, reason = Target.REJECT, -1, 0, 0, Reason.REJECTED
    return Decision(target, pool, k, c, total - c, transfer, t, mode, reason, policy.version)

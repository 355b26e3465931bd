"""The per-request decision (paper §3.3 and §3.4.3): where to prefill, with which cache.

Rules, in order:

1. No threshold or no PrefillPool in the policy → local.
2. Fail open: pools that are unhealthy, have no healthy instance, or whose link is down are
   skipped; with none left the request is prefilled locally, never dropped. (Only when there is
   no healthy local prefill instance either is it rejected.)
3. Among usable pools, the one with the longest cached prefix, then the shortest queue.
4. Threshold: ``t_eff = t × factor`` of that pool (short-timescale adaptation, ``adapt``).
5. Bandwidth scarce (each cluster's cache judged on its own): local iff
   ``l_total − l_pd ≤ t_eff``, else the pool with its own cache ``l_prfaas``.
   Bandwidth abundant (best cache anywhere): ``l_prefix = max(l_prfaas, l_pd)``; local iff
   ``l_total − l_prefix ≤ t_eff``, else the pool; when the longer cache lives in the other
   cluster, a cross-cluster cache transfer of it is part of the decision.
6. Backlog guard (adaptive only): an offload is kept local while the link's backlog exceeds
   ``max_backlog_s``.
7. Inside the chosen cluster: the cache-affine instance unless it is more than
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
from prfaas.routing.state import InstanceState, LiveState, Mode

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


def _best_pool(live: LiveState, pool_hits: Sequence[PrefixHit]) -> tuple[int, PrefixHit]:
    """Usable pool with the longest cached prefix, then the shortest queue; -1 if none."""
    j, j_hit, j_queue = -1, MISS, math.inf
    for i, ps in enumerate(live.pools):
        if not ps.usable():
            continue
        hit = pool_hits[i] if i < len(pool_hits) else MISS
        queue = ps.target.queue_per_instance()
        if j < 0 or hit.tokens > j_hit.tokens or (hit.tokens == j_hit.tokens and queue < j_queue):
            j, j_hit, j_queue = i, hit, queue
    return j, j_hit


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
    t = policy.threshold_tokens
    j, j_hit = _best_pool(live, pool_hits) if t is not None and policy.pools else (-1, MISS)
    if t is None or j < 0:
        if t is None or not policy.pools:
            reason = Reason.NO_OFFLOAD
        else:  # every pool is down: fail open, and say so if it would have been offloaded
            reason = Reason.FAIL_OPEN if total_tokens - local_hit.tokens > t else Reason.SHORT
        return _place_local(total_tokens, local_hit, 0, reason, t, Mode.SCARCE, policy, live,
                            config, -1, MISS)  # fmt: skip

    ps = live.pools[j]
    adaptive = config.adaptive
    t_eff = ps.threshold(t) if adaptive else t
    mode = ps.mode if adaptive else Mode.SCARCE
    l_pd, l_pool = local_hit.tokens, j_hit.tokens
    local_transfer = remote_transfer = 0
    remote_hit = j_hit
    if mode == Mode.SCARCE:  # each cluster's cache on its own
        offload = total_tokens - l_pd > t_eff
    else:  # the best cache anywhere, shipped to the compute cluster if it lives elsewhere
        l_prefix = l_pool if l_pool > l_pd else l_pd
        offload = total_tokens - l_prefix > t_eff
        if offload and l_pd > l_pool:
            remote_transfer, remote_hit = l_pd, PrefixHit(l_pd, j_hit.instance)
        elif not offload and l_pool > l_pd:
            local_transfer, local_hit = l_pool, PrefixHit(l_pool, local_hit.instance)

    if not offload:
        return _place_local(total_tokens, local_hit, local_transfer, Reason.SHORT, t_eff, mode,
                            policy, live, config, j, j_hit)  # fmt: skip
    guard = adaptive and config.adapt.enabled
    if guard and ps.link.backlog_seconds() > config.adapt.max_backlog_s:
        return _place_local(total_tokens, local_hit, 0, Reason.BACKLOG, t_eff, mode, policy, live,
                            config, j, j_hit)  # fmt: skip
    c = remote_hit.tokens
    return Decision(
        target=Target.POOL,
        pool=j,
        instance=choose_instance(ps.target.instances, remote_hit.instance, config.affinity_slack),
        cached_tokens=c,
        uncached_tokens=total_tokens - c,
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

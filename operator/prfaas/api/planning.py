"""From custom resources to a planner ``Scenario`` (pure: no API calls)."""

from __future__ import annotations

from prfaas.api.pdcluster import PDClusterSpec
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.model.profiles import LinkProfile
from prfaas.model.scenario import (
    PDSpec,
    PlannerSettings,
    PoolSpec,
    Range,
    Scenario,
)
from prfaas.model.workload import Workload


def effective_link(link: LinkProfile, pool: PrefillPoolSpec) -> LinkProfile:
    """The link budget, capped by the pool's datacenter egress budget when one is declared."""
    if pool.egress is None:
        return link
    pool_budget = pool.egress.capacity_gbps * pool.egress.usable_fraction
    if pool_budget >= link.budget_gbps:
        return link
    return link.model_copy(update={"capacity_gbps": pool_budget, "usable_fraction": 1.0})


def scenario_for(
    name: str,
    pd: PDClusterSpec,
    pool_name: str,
    pool: PrefillPoolSpec,
    pool_replicas: int,
    link: LinkProfile,
    workload: Workload,
) -> Scenario:
    """The planning problem for one PD cluster and its PrefillPool, within declared bounds.

    ``pool_replicas`` is the pool's current size (clamped to its bounds); it is searched within
    the bounds only when ``policy.planPoolSize`` is set.
    """
    n = pd.instances
    min_prefill = max(pd.prefill.replicas.min, n - pd.decode.replicas.max)
    min_decode = max(pd.decode.replicas.min, n - pd.prefill.replicas.max, 1)
    current_pool = pool.replicas.clamp(pool_replicas)
    policy = pd.policy
    return Scenario(
        model=pd.model,
        prefill_pool=PoolSpec(name=pool_name, instances=current_pool, instance=pool.instance),
        pd_cluster=PDSpec(
            name=name,
            instances=n,
            instance=pd.instance,
            min_prefill=min_prefill,
            min_decode=min_decode,
        ),
        link=effective_link(link, pool),
        workload=workload,
        planner=PlannerSettings(
            threshold_step_tokens=policy.threshold.step_tokens,
            service_time=policy.service_time,
            pool_instances=(
                Range(min=max(pool.replicas.min, 1), max=pool.replicas.max)
                if policy.plan_pool_size
                else None
            ),
            fixed_threshold_tokens=policy.threshold.tokens
            if policy.threshold.mode == "Fixed"
            else None,
        ),
    )

"""A fleet: several PrefillPools and several PD clusters, planned together (paper §3.1).

Pools k (instances or bounds, instance profile, datacenter egress budget), PD clusters i
(instances, profile, workload with its demand), links (i, k) from each cluster to the pools it may
use. Loadable from a hand-written YAML file (``load_fleet``) or built from the CRs
(``prfaas.api.fleet``); ``prfaas.model.fleet_planner.plan_fleet`` plans it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from prfaas.model.base import Spec
from prfaas.model.profiles import InstanceProfile, LinkProfile
from prfaas.model.scenario import Count, ModelProfile, Range, ScenarioError, describe
from prfaas.model.workload import Workload

Name = Annotated[str, Field(min_length=1, max_length=253)]
MAX_POOLS = 64
MAX_CLUSTERS = 1_000


class Egress(Spec):
    """A pool datacenter's egress, shared by every link that leaves it."""

    capacity_gbps: Annotated[float, Field(gt=0, le=1_000_000)]
    usable_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0

    @property
    def budget_gbps(self) -> float:
        return self.capacity_gbps * self.usable_fraction


class FleetPool(Spec):
    """A PrefillPool: ``instances`` now; with ``replicas`` the planner sizes it within them."""

    name: Name
    datacenter: str = Field(default="", max_length=63)
    instances: Count
    replicas: Range | None = None
    """Bounds of N_prfaas: the plan may size the pool anywhere in them (default: keep it)."""
    instance: InstanceProfile
    egress: Egress | None = None
    """The datacenter's egress budget for KVCache, shared by all links from this pool."""

    def bounds(self) -> tuple[int, int]:
        if self.replicas is None:
            return self.instances, self.instances
        return self.replicas.min, self.replicas.max


class FleetLink(LinkProfile):
    """The link from ``pool`` to the cluster it is listed under."""

    pool: Name


class FleetCluster(Spec):
    """A local PD cluster: its machines, profile, workload (``arrivalRateRps`` is its demand)."""

    name: Name
    datacenter: str = Field(default="", max_length=63)
    instances: Annotated[int, Field(ge=2, le=100_000)]
    instance: InstanceProfile
    min_prefill: Count = 1
    min_decode: Annotated[int, Field(ge=1, le=100_000)] = 1
    workload: Workload
    links: list[FleetLink] = Field(default_factory=list, max_length=MAX_POOLS)
    threshold_step_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    fixed_threshold_tokens: Annotated[int, Field(ge=0, le=16_777_216)] | None = None

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.instance.decode is None:
            raise ValueError("instance.decode is required for a PD cluster")
        if self.min_prefill + self.min_decode > self.instances:
            raise ValueError(
                f"minPrefill ({self.min_prefill}) + minDecode ({self.min_decode}) "
                f"exceed instances ({self.instances})"
            )
        rate = self.workload.arrival_rate_rps
        if rate is None or rate <= 0:
            raise ValueError("workload.arrivalRateRps (the cluster's demand) must be > 0")
        seen = [link.pool for link in self.links]
        dup = next((p for p in seen if seen.count(p) > 1), None)
        if dup is not None:
            raise ValueError(f"links: pool {dup!r} is listed twice")
        return self

    @property
    def demand_rps(self) -> float:
        rate = self.workload.arrival_rate_rps
        assert rate is not None  # checked above
        return rate


class FleetPlanner(Spec):
    objective: Literal["throughput", "cost"] = "throughput"
    """throughput: max-min demand satisfaction, then fewest pool instances. cost: the cheapest
    pool sizes that serve every demand (needs pricePerGpuHour on the pools)."""
    tolerance: Annotated[float, Field(gt=0, le=0.1)] = 1e-3
    """Relative precision of the satisfaction levels."""


class Fleet(Spec):
    model: ModelProfile
    pools: list[FleetPool] = Field(min_length=1, max_length=MAX_POOLS)
    clusters: list[FleetCluster] = Field(min_length=1, max_length=MAX_CLUSTERS)
    planner: FleetPlanner = FleetPlanner()

    @model_validator(mode="after")
    def _names(self) -> Self:
        for what, names in (
            ("pools", [p.name for p in self.pools]),
            ("clusters", [c.name for c in self.clusters]),
        ):
            dup = next((n for n in names if names.count(n) > 1), None)
            if dup is not None:
                raise ValueError(f"{what}: name {dup!r} is used twice")
        known = {p.name for p in self.pools}
        for c in self.clusters:
            for link in c.links:
                if link.pool not in known:
                    raise ValueError(
                        f"clusters[{c.name}].links: unknown pool {link.pool!r} "
                        f"(pools: {', '.join(sorted(known))})"
                    )
        return self

    def pool_index(self, name: str) -> int:
        return next(k for k, p in enumerate(self.pools) if p.name == name)


def parse_fleet(data: Any, source: str = "fleet") -> Fleet:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level")
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {describe(exc)}") from None


def is_fleet(data: Any) -> bool:
    """A fleet file (rather than a single-cluster scenario) has ``pools`` and ``clusters``."""
    return isinstance(data, dict) and "clusters" in data and "pools" in data


def load_fleet(path: str | Path) -> Fleet:
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    return parse_fleet(data, str(path))

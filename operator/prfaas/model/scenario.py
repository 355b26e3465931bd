"""A planning scenario: everything ``prfaas plan`` needs, loadable from YAML or JSON.

The paper's case study is embedded (``case_study.yaml`` next to this file) and is the default.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from prfaas.model.base import Spec, rule
from prfaas.model.profiles import InstanceProfile, KVCacheProfile, LinkProfile
from prfaas.model.throughput import ServiceTime
from prfaas.model.workload import Workload

Count = Annotated[int, Field(ge=0, le=100_000)]


class ModelProfile(Spec):
    name: str = Field(min_length=1, max_length=253)
    kv_cache: KVCacheProfile


class Range(Spec):
    min: Count
    max: Count

    @rule(
        "self.min <= self.max",
        "min must not exceed max",
        detail=lambda s: f"min ({s.min}) must not exceed max ({s.max})",
    )
    def _ordered(self) -> bool:
        return self.min <= self.max


class PoolSpec(Spec):
    """A PrefillPool: standalone prefill instances in another datacenter."""

    name: str = Field(default="prefill-pool", min_length=1, max_length=253)
    instances: Count
    instance: InstanceProfile


class PDSpec(Spec):
    """A local PD cluster of ``instances`` split between prefill (PD-P) and decode (PD-D)."""

    name: str = Field(default="pd-cluster", min_length=1, max_length=253)
    instances: Annotated[int, Field(ge=1, le=100_000)]
    instance: InstanceProfile
    min_prefill: Count = 1
    min_decode: Annotated[int, Field(ge=1, le=100_000)] = 1

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.instance.decode is None:
            raise ValueError("instance.decode is required for a PD cluster")
        if self.min_prefill + self.min_decode > self.instances:
            raise ValueError(
                f"minPrefill ({self.min_prefill}) + minDecode ({self.min_decode}) "
                f"exceed instances ({self.instances})"
            )
        return self


class PlannerSettings(Spec):
    threshold_step_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    service_time: ServiceTime = "subset_mean"
    pool_instances: Range | None = None  # search N_prfaas here; default: the pool's instances
    cost_budget_per_hour: Annotated[float, Field(gt=0)] | None = None
    homogeneous_instances: Annotated[int, Field(ge=2, le=100_000)] | None = None
    max_transfer_seconds: Annotated[float, Field(gt=0)] = 60.0
    fixed_threshold_tokens: Annotated[int, Field(ge=0, le=16_777_216)] | None = None


class Scenario(Spec):
    model: ModelProfile
    prefill_pool: PoolSpec
    pd_cluster: PDSpec
    link: LinkProfile
    workload: Workload
    planner: PlannerSettings = PlannerSettings()

    @property
    def homogeneous_instances(self) -> int:
        """Baseline size: as many instances as PrfaaS-PD uses in all, unless set."""
        explicit = self.planner.homogeneous_instances
        return explicit or (self.pd_cluster.instances + self.prefill_pool.instances)


class ScenarioError(ValueError):
    """A scenario file that cannot be read or is invalid; the message names the field."""


def describe(error: ValidationError) -> str:
    """The first validation problem as one line: ``field.path: message``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = len(error.errors()) - 1
    return f"{where}: {message}" + (f" (and {more} more problem(s))" if more else "")


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {describe(exc)}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a YAML or JSON file (JSON is YAML)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    return parse_scenario(data, str(path))


def case_study_text() -> str:
    return resources.files("prfaas.model").joinpath("case_study.yaml").read_text(encoding="utf-8")


def case_study() -> Scenario:
    """The paper's case study (§4): 4×8 H200 PrefillPool, 8×8 H20 PD cluster, 100 Gbps."""
    return parse_scenario(yaml.safe_load(case_study_text()), "case study")

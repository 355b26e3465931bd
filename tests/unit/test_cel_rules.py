"""Each rule's CEL (what the API server runs) and its Python predicate (what pydantic runs)
agree on the same objects, evaluated here with a CEL interpreter.

Objects are built with ``model_construct`` so they may break the rule under test; the CEL sees
them as the API server would, by alias, defaults filled in and absent fields left out.
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes

import prfaas.api
import prfaas.model
from prfaas.api.common import Endpoints, Handoff, ReplicaBounds, ScaleTargetRef
from prfaas.api.pdcluster import PDClusterSpec, PrometheusSource, ThresholdPolicy, WorkloadSource
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.model.base import Rule, Spec, rules_of
from prfaas.model.profiles import InstanceProfile, KVCacheProfile, KVPoint, PrefillProfile
from prfaas.model.scenario import Range
from prfaas.model.workload import (
    HistogramLengths,
    LengthDistribution,
    LogNormalLengths,
    Workload,
)

for package in (prfaas.api, prfaas.model):  # so that every Spec subclass with rules exists
    for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
PD = PDClusterSpec.model_validate(
    yaml.safe_load((SAMPLES / "pdcluster-h20.yaml").read_text(encoding="utf-8"))["spec"]
)
POOL = PrefillPoolSpec.model_validate(
    yaml.safe_load((SAMPLES / "prefillpool-h200.yaml").read_text(encoding="utf-8"))["spec"]
)


def raw(model: type[Spec], base: Spec | None = None, **fields: Any) -> Any:
    """``model`` with ``fields`` (each already valid), its own rules not checked."""
    values = {name: getattr(base, name) for name in model.model_fields} if base else {}
    return model.model_construct(**(values | fields))


def kv(*points: tuple[int, float]) -> list[KVPoint]:
    return [KVPoint(tokens=t, mib=m) for t, m in points]


def with_threshold(pd: PDClusterSpec, threshold: ThresholdPolicy) -> Any:
    return raw(PDClusterSpec, pd, policy=pd.policy.model_copy(update={"threshold": threshold}))


def with_bounds(pd: PDClusterSpec, stage: str, lo: int, hi: int) -> Any:
    bounds = ReplicaBounds(min=lo, max=hi)
    part = getattr(pd, stage)
    return raw(PDClusterSpec, pd, **{stage: part.model_copy(update={"replicas": bounds})})


LOGNORMAL = LogNormalLengths(mu=9.9, sigma=1.0, min=128, max=131072)
HISTOGRAM = HistogramLengths(min=1, max=4096, buckets=[{"le": 1024, "count": 5}])
HIST_WORKLOAD = Workload(input_length=LengthDistribution(histogram=HISTOGRAM), output_tokens=1024)
FIXED = ThresholdPolicy(mode="Fixed", tokens=20_000)
PROMETHEUS = PrometheusSource(url="http://127.0.0.1:9090")

CASES: dict[type[Spec], list[Any]] = {
    ScaleTargetRef: [
        PD.prefill.scale_target_ref,
        raw(ScaleTargetRef, PD.prefill.scale_target_ref, kind=""),
        raw(ScaleTargetRef, PD.prefill.scale_target_ref, name=""),
    ],
    Endpoints: [
        Endpoints(urls=["http://a:8000"]),
        Endpoints(service="h20-prefill", port="http"),
        Endpoints(selector={"app.kubernetes.io/name": "h20", "tier": "prefill"}),
        raw(Endpoints),
        raw(Endpoints, service="a", selector={"app": "b"}),
        raw(Endpoints, urls=["http://a:8000"], service="a"),
        raw(Endpoints, urls=["http://a:8000"], selector={"app": "b"}),
        raw(Endpoints, urls=[], service="a"),
        raw(Endpoints, selector={}),
        raw(Endpoints, selector={"bad key,x": "v"}),
        raw(Endpoints, selector={"-leading": "v"}),
        raw(Endpoints, selector={"example.com/ok": "v", "Example.com/caps": "v"}),
        raw(Endpoints, selector={"a" * 63: "v"}),
        raw(Endpoints, selector={"a" * 64: "v"}),
    ],
    Handoff: [
        raw(Handoff, protocol="vllm", bootstrap_port=None),
        raw(Handoff, protocol="sglang", bootstrap_port=None),
        raw(Handoff, protocol="sglang", bootstrap_port=9001),
        raw(Handoff, protocol="vllm", bootstrap_port=9001),
    ],
    ReplicaBounds: [
        raw(ReplicaBounds, min=0, max=3),
        raw(ReplicaBounds, min=2, max=2),
        raw(ReplicaBounds, min=5, max=2),
    ],
    WorkloadSource: [
        PD.workload,
        raw(WorkloadSource, prometheus=PROMETHEUS),
        raw(WorkloadSource, prometheus=PROMETHEUS, declared=PD.workload.declared),
        raw(WorkloadSource),
    ],
    ThresholdPolicy: [
        ThresholdPolicy(),
        FIXED,
        raw(ThresholdPolicy, mode="Fixed"),
        raw(ThresholdPolicy, mode="Fixed", tokens=0),
    ],
    PDClusterSpec: [
        PD,
        raw(PDClusterSpec, PD, instances=2),  # minima 1 + 1 fit exactly
        with_bounds(PD, "prefill", 7, 7),  # 7 + 1 fit 8
        with_bounds(PD, "decode", 8, 8),  # 1 + 8 exceed 8
        with_bounds(PD, "prefill", 0, 0),
        with_bounds(PD, "decode", 0, 0),
        with_threshold(PD, FIXED),
        with_threshold(PD, ThresholdPolicy(mode="Fixed", tokens=131_072)),
        with_threshold(PD, ThresholdPolicy(mode="Fixed", tokens=131_073)),
        with_threshold(PD, ThresholdPolicy(mode="Auto", tokens=500_000)),
        with_threshold(
            raw(PDClusterSpec, PD, workload=WorkloadSource(declared=HIST_WORKLOAD)),
            ThresholdPolicy(mode="Fixed", tokens=4096),
        ),
        with_threshold(
            raw(PDClusterSpec, PD, workload=WorkloadSource(declared=HIST_WORKLOAD)),
            ThresholdPolicy(mode="Fixed", tokens=5000),
        ),
        with_threshold(
            raw(PDClusterSpec, PD, workload=WorkloadSource(prometheus=PROMETHEUS)),
            ThresholdPolicy(mode="Fixed", tokens=500_000),
        ),
        raw(PDClusterSpec, PD, instance=raw(InstanceProfile, PD.instance, decode=None)),
    ],
    PrefillPoolSpec: [
        POOL,
        raw(PrefillPoolSpec, POOL, replicas=ReplicaBounds(min=0, max=1)),
        raw(PrefillPoolSpec, POOL, replicas=ReplicaBounds(min=0, max=0)),
    ],
    KVCacheProfile: [
        PD.model.kv_cache,
        raw(KVCacheProfile, fixed_mib=10.0, per_token_kib=70.0),
        raw(KVCacheProfile, table=kv((1, 1.0), (2, 1.0))),  # flat values are allowed
        raw(KVCacheProfile, table=kv((2, 1.0), (1, 2.0))),
        raw(KVCacheProfile, table=kv((1, 1.0), (1, 2.0))),  # equal tokens
        raw(KVCacheProfile, table=kv((1, 2.0), (2, 1.0))),
        raw(KVCacheProfile, table=kv((1, 1.0), (2, 2.0)), fixed_mib=1.0, per_token_kib=1.0),
        raw(KVCacheProfile, table=kv((1, 1.0), (2, 2.0)), fixed_mib=1.0),
        raw(KVCacheProfile, fixed_mib=10.0),
        raw(KVCacheProfile, per_token_kib=10.0),
        raw(KVCacheProfile),
    ],
    PrefillProfile: [
        PD.instance.prefill,
        raw(PrefillProfile, table=list(reversed(PD.instance.prefill.table))),
        raw(PrefillProfile, table=[PD.instance.prefill.table[0]] * 2),
        raw(
            PrefillProfile,
            table=[
                p.model_copy(update={"seconds": 1.0 / p.tokens}) for p in PD.instance.prefill.table
            ],
        ),
    ],
    Range: [raw(Range, min=0, max=0), raw(Range, min=1, max=4), raw(Range, min=3, max=2)],
    LogNormalLengths: [
        LOGNORMAL,
        raw(LogNormalLengths, LOGNORMAL, min=131072),
        raw(LogNormalLengths, LOGNORMAL, min=200_000),
    ],
    HistogramLengths: [HISTOGRAM, raw(HistogramLengths, HISTOGRAM, min=4096)],
    LengthDistribution: [
        LengthDistribution(lognormal=LOGNORMAL),
        LengthDistribution(histogram=HISTOGRAM),
        raw(LengthDistribution, lognormal=LOGNORMAL, histogram=HISTOGRAM),
        raw(LengthDistribution),
    ],
}


def models_with_rules(base: type[Spec] = Spec) -> Iterator[type[Spec]]:
    for sub in base.__subclasses__():
        if rules_of(sub):
            yield sub
        yield from models_with_rules(sub)


def _is_sorted(items: celtypes.ListType) -> celtypes.BoolType:
    """Kubernetes' CEL list extension ``<list>.isSorted()``, which celpy does not ship."""
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


ENV = celpy.Environment()


def cel_holds(rule: Rule, obj: Spec) -> bool:
    program = ENV.program(ENV.compile(rule.cel), functions={"isSorted": _is_sorted})
    doc = obj.model_dump(mode="json", by_alias=True, exclude_none=True, warnings=False)
    result = program.evaluate({"self": celpy.json_to_cel(doc)})
    assert isinstance(result, celtypes.BoolType), f"{rule.cel!r} on {doc}: {result!r}"
    return bool(result)


CHECKS = [
    pytest.param(r, obj, id=f"{model.__name__}-{i}.{j}")
    for model, objs in CASES.items()
    for i, obj in enumerate(objs)
    for j, r in enumerate(rules_of(model))
]


def test_every_model_with_rules_has_cases() -> None:
    assert set(models_with_rules()) == set(CASES)


@pytest.mark.parametrize(("rule", "obj"), CHECKS)
def test_cel_and_python_agree(rule: Rule, obj: Spec) -> None:
    assert cel_holds(rule, obj) == rule.holds(obj)


@pytest.mark.parametrize("model", list(CASES), ids=lambda m: m.__name__)
def test_the_cases_hold_and_break_every_rule(model: type[Spec]) -> None:
    for r in rules_of(model):
        outcomes = {r.holds(obj) for obj in CASES[model]}
        assert outcomes == {True, False}, f"{model.__name__}: {r.message!r} is never {not outcomes}"


def test_a_broken_rule_is_pydantics_error_with_the_same_words() -> None:
    with pytest.raises(
        ValueError, match=r"threshold\.tokens is required when threshold\.mode is Fixed"
    ):
        ThresholdPolicy(mode="Fixed")
    with pytest.raises(ValueError, match=r"replicas: min \(5\) must not exceed max \(2\)"):
        ReplicaBounds(min=5, max=2)

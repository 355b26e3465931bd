"""The fleet planner: the single-cluster planner as its one-pool case, brute force on small fleets,
max-min fairness, pool sizing, and the plans it returns being feasible."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prfaas.commands.fleet_input import load_input
from prfaas.model.fleet import Fleet, parse_fleet
from prfaas.model.fleet_curves import ClusterCurves, cluster_curves
from prfaas.model.fleet_planner import FleetPlan, plan_fleet
from prfaas.model.planner import plan
from prfaas.model.scenario import Scenario, ScenarioError, case_study

ROOT = Path(__file__).resolve().parents[2]
CASE = case_study().model_dump(mode="json", exclude_none=True)
H200 = CASE["prefillPool"]["instance"]
H20 = CASE["pdCluster"]["instance"]


def workload(mu: float, rate: float) -> dict[str, Any]:
    return {
        "inputLength": {"lognormal": {"mu": mu, "sigma": 1.0, "min": 128, "max": 131072}},
        "outputTokens": 1024,
        "arrivalRateRps": rate,
    }


def pool(name: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "instances": n, "instance": H200, **extra}


def cluster(name: str, n: int, mu: float, rate: float, *links: Any, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "instances": n,
        "instance": H20,
        "workload": workload(mu, rate),
        "links": [{"pool": p, "capacityGbps": g} for p, g in links],
        **extra,
    }


def fleet(pools: list[dict[str, Any]], clusters: list[dict[str, Any]], **planner: Any) -> Fleet:
    return parse_fleet(
        {"model": CASE["model"], "pools": pools, "clusters": clusters, "planner": planner}
    )


def one_cluster(sc: Scenario) -> Fleet:
    d = sc.model_dump(mode="json", exclude_none=True)
    p: dict[str, Any] = {"name": "pool", "instances": d["prefillPool"]["instances"]}
    if "poolInstances" in d["planner"]:
        p["replicas"] = d["planner"]["poolInstances"]
    p["instance"] = d["prefillPool"]["instance"]
    c = {
        "name": "pd",
        "instances": d["pdCluster"]["instances"],
        "instance": d["pdCluster"]["instance"],
        "workload": {**d["workload"], "arrivalRateRps": 1.0},
        "links": [{"pool": "pool", **d["link"]}],
    }
    return parse_fleet({"model": d["model"], "pools": [p], "clusters": [c]})


def check_feasible(f: Fleet, p: FleetPlan) -> None:
    """Every constraint of the formulation, recomputed from the plan's own numbers."""
    curves = {cc.name: cc for cc in cluster_curves(f)}
    for c in p.clusters:
        cc = curves[c.name]
        j = int(np.flatnonzero(cc.thresholds == c.threshold_tokens)[0])
        lam = c.throughput_rps
        assert c.n_prefill + c.n_decode == cc.instances
        assert lam * cc.local[j] <= c.n_prefill * (1 + 1e-6)  # PD-P keeps up
        assert lam <= c.n_decode * cc.decode_rate * (1 + 1e-6)  # PD-D keeps up
        assert sum(s.fraction for s in c.shares) == pytest.approx(1.0 if cc.p[j] > 0 else 0.0)
        for s in c.shares:
            assert s.egress_gbps <= s.link_budget_gbps * (1 + 1e-6)
    for q, spec in zip(p.pools, f.pools, strict=True):
        lo, hi = spec.bounds()
        assert lo <= q.n_prfaas <= hi
        assert q.busy_instances <= q.n_prfaas * (1 + 1e-6)
        if q.egress_budget_gbps is not None:
            assert q.egress_gbps <= q.egress_budget_gbps * (1 + 1e-6)


# -- the single-cluster planner is the one-pool, one-cluster case -----------------------------


def _variant(*edits: tuple[tuple[str, ...], Any]) -> Scenario:
    data = copy.deepcopy(CASE)
    for path, value in edits:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return Scenario.model_validate(data)


@pytest.mark.parametrize(
    "sc",
    [
        case_study(),
        _variant((("link", "capacityGbps"), 5.0)),  # egress-bound
        _variant((("planner", "poolInstances"), {"min": 1, "max": 8})),  # pool sized
        _variant((("workload", "inputLength", "lognormal", "mu"), 9.0)),  # short prompts
    ],
    ids=["case-study", "narrow-link", "pool-sized", "short-prompts"],
)
def test_one_cluster_one_pool_is_the_single_cluster_planner(sc: Scenario) -> None:
    single = plan(sc).prfaas
    f = one_cluster(sc)
    joint = plan_fleet(f).joint
    c = joint.clusters[0]
    assert c.throughput_rps == pytest.approx(single.throughput_rps, rel=f.planner.tolerance)
    assert (c.n_prefill, c.n_decode) == (single.n_prefill, single.n_decode)
    assert c.threshold_tokens == pytest.approx(single.threshold_tokens, abs=200)
    assert joint.pools[0].n_prfaas == single.n_prfaas
    assert c.egress_gbps == pytest.approx(single.egress_gbps, rel=0.02)
    check_feasible(f, joint)


def test_the_case_study_reproduces_table6_as_a_fleet() -> None:
    r = plan_fleet(one_cluster(case_study()))
    c = r.joint.clusters[0]
    assert c.throughput_rps == pytest.approx(3.24, rel=0.01)
    assert (c.threshold_tokens, c.n_prefill, c.n_decode) == (19_400, 3, 5)
    assert r.homogeneous.clusters[0].throughput_rps == pytest.approx(2.11, rel=0.01)
    # alone, the independent plan is the joint plan
    assert r.independent.clusters[0].throughput_rps == pytest.approx(c.throughput_rps, rel=1e-3)


# -- brute force on small fleets ---------------------------------------------------------------


def brute_force_level(f: Fleet, step: float = 0.02) -> float:
    """max s such that every cluster carries s × its demand, by enumeration: every threshold of
    the grid, every split, and each cluster's spread over its two pools on a ``step`` grid."""
    curves = cluster_curves(f)
    n_pools = len(f.pools)
    sizes = np.array([float(p.bounds()[1]) for p in f.pools])
    egress = np.array([p.egress.budget_gbps if p.egress else math.inf for p in f.pools])
    fracs = np.arange(0.0, 1.0 + 1e-9, step)

    def options(cc: ClusterCurves) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
        """(local/decode bound on s, compute per pool, egress per pool, link loads) per choice."""
        out = []
        for j in range(len(cc.thresholds)):
            for n_p in range(cc.min_prefill, cc.instances - cc.min_decode + 1):
                local = n_p / (cc.demand * cc.local[j]) if cc.local[j] > 0 else math.inf
                decode = (cc.instances - n_p) * cc.decode_rate / cc.demand
                for x in fracs if len(cc.pools) == 2 else [1.0]:
                    share = np.array([x, 1 - x])[: len(cc.pools)]
                    comp, kv = np.zeros(n_pools), np.zeros(n_pools)
                    comp[list(cc.pools)] = cc.demand * cc.pool[:, j] * share
                    kv[list(cc.pools)] = cc.demand * cc.kv[j] * share
                    with np.errstate(divide="ignore"):
                        link = np.where(
                            share > 0, cc.link_budget / (cc.demand * cc.kv[j] * share), np.inf
                        )
                    own = min(local, decode, float(link.min()) if link.size else math.inf)
                    out.append((own, comp, kv, np.zeros(0)))
        return out

    per = [options(cc) for cc in curves]
    best = 0.0
    for combo in itertools.product(*per):
        own = min(o[0] for o in combo)
        comp = sum(o[1] for o in combo)
        kv = sum(o[2] for o in combo)
        with np.errstate(divide="ignore", invalid="ignore"):
            shared = np.minimum(
                np.where(comp > 0, sizes / comp, np.inf), np.where(kv > 0, egress / kv, np.inf)
            )
        best = max(best, min(own, float(shared.min())))
    return best


SMALL = [
    # two clusters share one pool, different prompts and links
    (
        [pool("a", 3)],
        [
            cluster("long", 4, 10.3, 1.0, ("a", 50), thresholdStepTokens=16384),
            cluster("short", 4, 9.3, 1.5, ("a", 5), thresholdStepTokens=16384),
        ],
    ),
    # two pools, one cluster on both, one on one; an egress budget binds
    (
        [pool("a", 2, egress={"capacityGbps": 8}), pool("b", 2)],
        [
            cluster("both", 4, 10.0, 1.2, ("a", 100), ("b", 10), thresholdStepTokens=16384),
            cluster("one", 3, 9.8, 0.8, ("a", 100), thresholdStepTokens=16384),
        ],
    ),
]


@pytest.mark.parametrize(("pools", "clusters"), SMALL, ids=["shared-pool", "two-pools-egress"])
def test_the_lowest_satisfaction_matches_brute_force(
    pools: list[dict[str, Any]], clusters: list[dict[str, Any]]
) -> None:
    f = fleet(pools, clusters)
    joint = plan_fleet(f).joint
    brute = brute_force_level(f)
    # the planner's spread is continuous, the brute force's a 2% grid: never below it, and
    # above it by no more than what the grid can miss
    assert joint.satisfaction >= brute * (1 - 2 * f.planner.tolerance)
    assert joint.satisfaction <= brute * 1.03
    check_feasible(f, joint)


# -- fairness, sizing, cost ----------------------------------------------------------------------


def test_a_cluster_that_does_not_share_the_bottleneck_keeps_rising() -> None:
    # two clusters saturate the small pool they share; the third, on a pool of its own, is not
    # held at their level but rises until its own machines stop it
    f = fleet(
        [pool("small", 2), pool("big", 8)],
        [
            cluster("a", 6, 10.3, 2.0, ("small", 100)),
            cluster("b", 6, 10.3, 2.0, ("small", 100)),
            cluster("c", 6, 10.3, 2.0, ("big", 100)),
        ],
    )
    r = plan_fleet(f)
    a, b, c = (r.joint.cluster(n) for n in "abc")
    assert a.satisfaction == pytest.approx(b.satisfaction, rel=2e-3)
    assert (a.limit, b.limit, c.limit) == ("pools", "pools", "cluster")
    assert c.satisfaction > a.satisfaction * 1.2
    assert r.rounds == 2
    check_feasible(f, r.joint)


def test_a_shared_pool_goes_where_it_is_needed() -> None:
    # one pool, one long-prompt cluster and one short-prompt cluster with the same demand: the
    # even split starves the first; the joint plan gives it most of the pool
    f = fleet(
        [pool("shared", 4)],
        [
            cluster("long", 8, 10.4, 2.6, ("shared", 100)),
            cluster("short", 8, 9.2, 2.6, ("shared", 100)),
        ],
    )
    r = plan_fleet(f)
    assert r.joint.satisfaction > r.independent.satisfaction * 1.05
    long_share = r.joint.cluster("long").shares[0].instances
    assert long_share > 2.0  # more than its even split of 4
    check_feasible(f, r.joint)
    check_feasible(f, r.independent)


def test_pools_are_sized_to_the_fewest_instances_that_carry_the_plan() -> None:
    # a decode-bound cluster cannot use a big pool: the plan keeps only what it needs
    f = fleet(
        [pool("p", 2, replicas={"min": 1, "max": 8})],
        [cluster("pd", 4, 10.0, 1.0, ("p", 100), minPrefill=1, minDecode=3)],
    )
    joint = plan_fleet(f).joint
    assert joint.clusters[0].limit == "cluster"
    assert joint.pools[0].n_prfaas < 8
    assert joint.pools[0].busy_instances > joint.pools[0].n_prfaas - 1  # no spare instance
    check_feasible(f, joint)


def test_cost_objective_buys_the_cheapest_pools_that_serve_the_demand() -> None:
    cheap = {**H200, "pricePerGpuHour": 2.0}
    dear = {**H200, "pricePerGpuHour": 3.0}
    pools = [
        {"name": "cheap", "instances": 8, "replicas": {"min": 0, "max": 8}, "instance": cheap},
        {"name": "dear", "instances": 8, "replicas": {"min": 0, "max": 8}, "instance": dear},
    ]
    clusters = [cluster("pd", 8, 10.0, 3.0, ("cheap", 100), ("dear", 100))]
    through = plan_fleet(fleet(pools, clusters)).joint
    f = fleet(pools, clusters, objective="cost")
    cost = plan_fleet(f).joint
    assert through.satisfaction > 1.2  # the pools could carry more
    assert cost.clusters[0].throughput_rps == pytest.approx(3.0, rel=1e-3)
    assert cost.clusters[0].limit == "demand"
    by = {p.name: p for p in cost.pools}
    assert by["dear"].n_prfaas == 0 and 1 <= by["cheap"].n_prfaas < 8
    # rounding up costs at most one instance per pool over the LP's bound
    lower = by["cheap"].busy_instances * 16.0
    assert cost.cost_per_hour is not None and cost.cost_per_hour <= lower + 16.0 + 24.0
    check_feasible(f, cost)


def test_cost_objective_needs_prices() -> None:
    f = fleet([pool("p", 2)], [cluster("pd", 4, 10.0, 1.0, ("p", 100))], objective="cost")
    from prfaas.model.planner import PlanError

    with pytest.raises(PlanError, match="pricePerGpuHour"):
        plan_fleet(f)


# -- inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["clusters"][0]["links"].append({"pool": "nope", "capacityGbps": 1}), "nope"),
        (lambda d: d["clusters"][0]["workload"].pop("arrivalRateRps"), "arrivalRateRps"),
        (lambda d: d["pools"].append(dict(d["pools"][0])), "used twice"),
        (lambda d: d["clusters"][0]["links"].append(dict(d["clusters"][0]["links"][0])), "twice"),
    ],
    ids=["unknown-pool", "no-demand", "duplicate-pool", "duplicate-link"],
)
def test_bad_fleets_name_the_problem(edit: Any, needle: str) -> None:
    data = {
        "model": CASE["model"],
        "pools": [pool("p", 2)],
        "clusters": [cluster("pd", 4, 10.0, 1.0, ("p", 100))],
    }
    edit(data)
    with pytest.raises(ScenarioError, match=needle):
        parse_fleet(data)


def test_the_sample_resources_and_the_sample_fleet_file_are_one_fleet() -> None:
    from_crs = load_input(str(ROOT / "manifests/samples/fleet"))
    from_file = load_input(str(ROOT / "bench/fleets/two-datacenters.yaml"))
    assert isinstance(from_crs, Fleet) and isinstance(from_file, Fleet)
    a, b = plan_fleet(from_crs), plan_fleet(from_file)
    for x, y in zip(a.plans(), b.plans(), strict=True):
        assert {c.name: c.throughput_rps for c in x.clusters} == pytest.approx(
            {c.name: c.throughput_rps for c in y.clusters}, rel=1e-9
        )
    assert len(from_crs.pools) == 2 and len(from_crs.clusters) == 3
    assert a.joint.satisfaction > a.independent.satisfaction * 1.2
    check_feasible(from_crs, a.joint)

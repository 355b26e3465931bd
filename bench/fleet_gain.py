"""Where planning a fleet jointly beats planning each PD cluster alone on an even split of the
pools (the independent baseline), and by how much.

Each family varies one asymmetry between PD clusters that share PrefillPools (case-study
hardware: H200 pools, H20 PD clusters); a cluster's demand is what it serves as a homogeneous PD
cluster on its own machines, so "scale" reads as "how many times its stand-alone capacity the
fleet gives every cluster at once". Gain = joint scale / independent scale.

    make bench-fleet-gain   # or: .venv/bin/python bench/fleet_gain.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_gen import case_parts, synthetic
from prfaas.model.fleet import parse_fleet
from prfaas.model.fleet_planner import FleetResult, plan_fleet

D = case_parts()


def _spec(
    pools: list[tuple[str, int]],
    clusters: list[tuple[str, int, float, dict[str, float]]],
    demand: dict[str, float],
) -> dict[str, Any]:
    return {
        "model": D["model"],
        "pools": [
            {"name": n, "instances": k, "instance": D["prefillPool"]["instance"]} for n, k in pools
        ],
        "clusters": [
            {
                "name": name,
                "instances": n,
                "instance": D["pdCluster"]["instance"],
                "workload": {
                    "inputLength": {
                        "lognormal": {"mu": mu, "sigma": 1.0, "min": 128, "max": 131072}
                    },
                    "outputTokens": 1024,
                    "arrivalRateRps": demand.get(name, 1.0),
                },
                "links": [{"pool": p, "capacityGbps": g} for p, g in links.items()],
            }
            for name, n, mu, links in clusters
        ],
    }


def alone(name: str, instances: int, mu: float) -> float:
    """Λ of the cluster as a homogeneous PD cluster of its own machines (no link, no pool)."""
    data = _spec([("none", 0)], [(name, instances, mu, {})], {})
    return plan_fleet(parse_fleet(data)).homogeneous.clusters[0].throughput_rps


def case(
    pools: list[tuple[str, int]], clusters: list[tuple[str, int, float, dict[str, float]]]
) -> FleetResult:
    demand = {name: alone(name, n, mu) for name, n, mu, _ in clusters}
    return plan_fleet(parse_fleet(_spec(pools, clusters, demand)))


def row(label: str, r: FleetResult) -> None:
    j, i = r.joint, r.independent
    per = ", ".join(
        f"{c.name} {c.satisfaction:.2f}/{i.cluster(c.name).satisfaction:.2f}" for c in j.clusters
    )
    gain = j.satisfaction / i.satisfaction
    print(f"| {label} | {i.satisfaction:.2f}× | {j.satisfaction:.2f}× | **{gain:.2f}×** | {per} |")


Clusters = list[tuple[str, int, float, dict[str, float]]]
ONE = [("p", 2)]


def families() -> list[tuple[str, list[tuple[str, int]], Clusters]]:
    out: list[tuple[str, list[tuple[str, int]], Clusters]] = [
        ("symmetric: 2 × (8 H20, μ 9.9, 100 Gbps)", ONE,
         [("a", 8, 9.9, {"p": 100}), ("b", 8, 9.9, {"p": 100})]),
    ]  # fmt: skip
    for mu in (9.6, 9.2, 8.8):
        out.append((f"prompts: μ 10.5 vs {mu} (8 H20 each)", ONE,
                    [("long", 8, 10.5, {"p": 100}), ("short", 8, mu, {"p": 100})]))  # fmt: skip
    for g in (5, 2, 1):
        out.append((f"links: 100 vs {g} Gbps (8 H20, μ 9.9)", ONE,
                    [("wide", 8, 9.9, {"p": 100}), ("thin", 8, 9.9, {"p": g})]))  # fmt: skip
    for n in (8, 4, 2):
        out.append((f"sizes: 16 vs {n} H20 (μ 9.9)", ONE,
                    [("big", 16, 9.9, {"p": 100}), ("small", n, 9.9, {"p": 100})]))  # fmt: skip
    out.append(("reach: a to 2 + 6 H200, b to the 2 only", [("p1", 2), ("p2", 6)],
                [("a", 8, 9.9, {"p1": 100, "p2": 100}), ("b", 8, 9.9, {"p1": 100})]))  # fmt: skip
    out.append(("the sample's shape (3 clusters, 6 + 4 H200)", [("east", 6), ("north", 4)],
                [("west", 8, 10.4, {"east": 100, "north": 25}),
                 ("central", 6, 9.9, {"east": 40, "north": 40}),
                 ("south", 10, 9.3, {"north": 10})]))  # fmt: skip
    return out


def main() -> None:
    print("One pool of 2 × 8 H200 unless said; demand = each cluster's stand-alone capacity.\n")
    print("| fleet | independent scale | joint scale | gain | per cluster joint/indep. |")
    print("|---|---|---|---|---|")
    for label, pools, clusters in families():
        row(label, case(pools, clusters))
    gains = []
    for seed in range(20):
        r = plan_fleet(synthetic(12, 4, seed))
        gains.append(r.joint.satisfaction / r.independent.satisfaction)
    gains.sort()
    print(
        f"\nrandom fleets (12 clusters × 4 pools, 20 seeds, bench/fleet_gen.py): gain median "
        f"{statistics.median(gains):.2f}×, min {gains[0]:.2f}×, max {gains[-1]:.2f}×"
    )


if __name__ == "__main__":
    main()

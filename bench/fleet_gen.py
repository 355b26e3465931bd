"""Synthetic fleets for the fleet benchmarks: the case study's hardware, asymmetric everything else.

``synthetic(clusters, pools, seed)`` draws PD clusters of 4-16 H20 instances with log-normal
workloads of different means, demands near their capacity, and links of 5-100 Gbps to 1-3 of the
pools (H200, 2-8 instances, some with a datacenter egress budget).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prfaas.model.fleet import Fleet, parse_fleet
from prfaas.model.scenario import case_study


def case_parts() -> dict[str, Any]:
    return case_study().model_dump(mode="json", exclude_none=True)


def synthetic(clusters: int, pools: int, seed: int = 0) -> Fleet:
    rng = np.random.default_rng(seed)
    d = case_parts()
    h200, h20 = d["prefillPool"]["instance"], d["pdCluster"]["instance"]
    pool_list = []
    for k in range(pools):
        n = int(rng.integers(2, 9))
        pool: dict[str, Any] = {
            "name": f"pool-{k}",
            "instances": n,
            "replicas": {"min": 1, "max": n},
            "instance": h200,
        }
        if rng.random() < 0.5:
            pool["egress"] = {"capacityGbps": float(rng.choice([20, 50, 100]))}
        pool_list.append(pool)
    cluster_list = []
    for i in range(clusters):
        mu = float(rng.uniform(8.8, 10.6))
        n = int(rng.integers(4, 17))
        linked = rng.choice(pools, size=int(rng.integers(1, min(3, pools) + 1)), replace=False)
        cluster_list.append(
            {
                "name": f"pd-{i}",
                "instances": n,
                "instance": h20,
                "workload": {
                    "inputLength": {
                        "lognormal": {"mu": mu, "sigma": 1.0, "min": 128, "max": 131072}
                    },
                    "outputTokens": 1024,
                    "arrivalRateRps": round(n * float(rng.uniform(0.2, 0.5)), 3),
                },
                "links": [
                    {"pool": f"pool-{k}", "capacityGbps": float(rng.choice([5, 10, 25, 100]))}
                    for k in sorted(linked)
                ],
            }
        )
    return parse_fleet(
        {"model": d["model"], "pools": pool_list, "clusters": cluster_list}, "synthetic"
    )

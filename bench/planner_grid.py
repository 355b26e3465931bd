"""Planner speed: the full case-study grid on one core.

t in 100-token steps over [0, 131072] × every local split (N_p = 1..7) × N_prfaas = 1..8,
including discretising the workload and evaluating the profiles: everything a reconcile does.

    make bench-planner      # or: .venv/bin/python bench/planner_grid.py --repeats 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, as the target says

from prfaas.model.planner import plan  # noqa: E402
from prfaas.model.scenario import Scenario, case_study  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    data = case_study().model_dump(mode="json", exclude_none=True)
    data["planner"]["poolInstances"] = {"min": 1, "max": 8}
    scenario = Scenario.model_validate(data)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    result = plan(scenario)  # warm-up
    cells = result.surface.throughput.size
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        plan(scenario)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    p90 = times[int(0.9 * (len(times) - 1))]
    print(
        f"grid: {result.surface.throughput.shape} = {cells:,} plans "
        f"(N_prfaas × N_p × t), workload grid {131072 - 128 + 1:,} lengths"
    )
    print(
        f"plan(): median {statistics.median(times):.1f} ms, p90 {p90:.1f} ms, "
        f"min {times[0]:.1f} ms over {args.repeats} runs on one core (target < 100 ms)"
    )
    best = result.prfaas
    print(
        f"best: N_prfaas={best.n_prfaas} N_p={best.n_prefill} N_d={best.n_decode} "
        f"t={best.threshold_tokens} Λ={best.throughput_rps:.2f} req/s"
    )


if __name__ == "__main__":
    main()

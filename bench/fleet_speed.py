"""Fleet planner speed: a 50-cluster × 8-pool synthetic fleet (``fleet_gen.synthetic``) on one core.

Everything a plan costs: discretising 50 workloads (131K-point grids), the profiles, the
progressive filling (a linear program per bisection step) and both baselines.

    make bench-fleet        # or: .venv/bin/python bench/fleet_speed.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, as the target says
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_gen import synthetic  # noqa: E402
from prfaas.model.fleet_planner import plan_fleet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    plan_fleet(synthetic(4, 2, 99))  # warm-up (imports, HiGHS)
    times, cpu, rounds, programs = [], [], [], []
    for seed in range(args.seeds):
        fleet = synthetic(args.clusters, args.pools, seed)
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = plan_fleet(fleet)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        rounds.append(result.rounds)
        programs.append(result.programs)
    times.sort()
    cpu.sort()
    # CPU time is what a plan costs on a free core; wall time also counts waiting for one
    print(
        f"{args.clusters} clusters × {args.pools} pools, {args.seeds} fleets × {args.repeats}: "
        f"CPU median {statistics.median(cpu) * 1e3:.0f} ms, max {cpu[-1] * 1e3:.0f} ms; "
        f"wall median {statistics.median(times) * 1e3:.0f} ms, max {times[-1] * 1e3:.0f} ms "
        f"on one core (target < 1 s); filling rounds {min(rounds)}-{max(rounds)}, "
        f"linear programs {min(programs)}-{max(programs)}"
    )


if __name__ == "__main__":
    main()

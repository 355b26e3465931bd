"""Simulator speed: 100,000 requests of the paper's case study on one core (target < 20 s).

Every configuration is timed on the same 100,000 Poisson requests at the default load
(0.9 × the homogeneous baseline's Λ_max), including planning and request generation once.

    .venv/bin/python bench/sim_speed.py            # all four configurations
    .venv/bin/python bench/sim_speed.py --policies prfaas --requests 200000
"""

from __future__ import annotations

import argparse
import os
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, as the target says

from prfaas.model.scenario import case_study  # noqa: E402
from prfaas.sim.options import POLICIES, SimOptions  # noqa: E402
from prfaas.sim.run import prepare, run_setup  # noqa: E402
from prfaas.sim.setups import setups  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    names = tuple(p for p in args.policies.split(",") if p)
    options = SimOptions(requests=args.requests, policies=names)  # type: ignore[arg-type]
    start = time.perf_counter()
    scenario, result, requests = prepare(case_study(), options)
    setup_s = time.perf_counter() - start
    print(f"plan + {len(requests):,} requests generated: {setup_s:.2f} s")
    total = setup_s
    for setup in setups(result, options.policies, options.routing):
        start = time.perf_counter()
        s = run_setup(scenario, setup, requests, options).summary
        took = time.perf_counter() - start
        total += took
        print(
            f"{setup.name:>14}: {took:5.2f} s ({took / len(requests) * 1e6:4.1f} µs/request), "
            f"{s['completed']:,} completed, P90 TTFT {s['ttft_p90_s']:.2f} s, "
            f"{s['duration_s'] / 3600:.1f} h simulated"
        )
    print(f"total {total:.1f} s on one core, {len(names)} configuration(s) (target: < 20 s)")


if __name__ == "__main__":
    main()

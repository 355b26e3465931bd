"""Record the signals the operator measured in the demo's live phase, reproducibly.

What the operator sees there: the router's uncached-length histogram, ``increase()`` over a
20 s Prometheus window, one pass every 3 s, at 24 req/s (the case study's 2.4 req/s at 10×
speed): ~480 requests per window, consecutive windows sharing 85% of them. Here in the case
study's own units (2.4 req/s, a 200 s window, a pass every 30 s): the same counts and the same
noise. Prompt lengths as the demo's load generator draws them (truncated log-normal,
mu 9.90, sigma 1.00 on [128, 131072]); after ``SHIFT_AT`` passes the demo's traffic shift
(mu 10.3: prompts ~1.5x longer).

    .venv/bin/python tests/unit/data/record_demo_noise.py   # rewrites demo_noise.json

Seeded (numpy's PCG64), and the output is committed: the test reads the file, so a change of
numpy's generators cannot change the test's input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prfaas.model.workload import LENGTH_BUCKETS

RATE_RPS = 2.4
WINDOW_S = 200.0
PASS_S = 30.0
PASSES = 60
SHIFT_AT = 30  # passes before the traffic shift
MU, SHIFT_MU, SIGMA, LO, HI = 9.90, 10.3, 1.00, 128, 131_072
SEED = 20261130


def lengths(rng: np.random.Generator, n: int, mu: float) -> np.ndarray:
    out = np.empty(0)
    while out.size < n:
        x = np.floor(rng.lognormal(mu, SIGMA, 2 * n))
        out = np.concatenate([out, x[(x >= LO) & (x <= HI)]])
    return out[:n]


def main() -> None:
    rng = np.random.default_rng(SEED)
    end = PASSES * PASS_S
    shift_s = SHIFT_AT * PASS_S
    times = np.cumsum(rng.exponential(1 / RATE_RPS, int(RATE_RPS * (end + WINDOW_S) * 1.2)))
    times = times[times < end + WINDOW_S] - WINDOW_S  # the window is full at the first pass
    mus = np.where(times < shift_s, MU, SHIFT_MU)
    sizes = np.where(mus == MU, lengths(rng, times.size, MU), lengths(rng, times.size, SHIFT_MU))
    edges = np.array([float(b) for b in LENGTH_BUCKETS])
    passes = []
    for k in range(1, PASSES + 1):
        now = k * PASS_S
        seen = sizes[(times > now - WINDOW_S) & (times <= now)]
        cumulative = [int(np.sum(seen <= le)) for le in edges]
        passes.append(
            {
                "t": now,
                "rate": round(seen.size / WINDOW_S, 4),
                "buckets": [[int(le), c] for le, c in zip(edges, cumulative, strict=True)]
                + [["+Inf", int(seen.size)]],
            }
        )
    doc = {
        "about": "demo live-phase signals, case-study units; see record_demo_noise.py",
        "passS": PASS_S,
        "shiftAtPass": SHIFT_AT,
        "passes": passes,
    }
    out = Path(__file__).with_name("demo_noise.json")
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({len(passes)} passes)")


if __name__ == "__main__":
    main()

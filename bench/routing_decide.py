"""Per-request routing cost: prefix lookup in two clusters + ``decide``, as the router runs it.

Targets: p99 < 100 µs for a 4K-token prompt, < 1 ms for 128K (prefix lookup included). Token
hashing (``block_hashes``) is timed separately: it runs once per request at ingress.

    .venv/bin/python bench/routing_decide.py
"""

from __future__ import annotations

import argparse
import os
import random
import time

from prfaas.routing import (
    PoolRoute,
    PrefixIndex,
    Router,
    RoutingConfig,
    RoutingPolicy,
    block_hashes,
)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    samples.sort()
    n = len(samples)
    return samples[n // 2], samples[int(0.99 * (n - 1))], samples[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = random.Random(0)
    local, pool = PrefixIndex(), PrefixIndex()
    # a warm index: 20,000 cached prompts of up to 128K tokens (~1M blocks in all)
    for r in range(20_000):
        blocks = rng.randint(1, 256)
        hashes = [(r << 9) + k for k in range(blocks)]
        (local if r % 2 else pool).insert(hashes, blocks * 512, instance=r % 8)
    router = Router(
        RoutingPolicy(1, 19_400, (PoolRoute("pool", (), 100.0),)),
        8,
        {"pool": 4},
        RoutingConfig(),
        local,
        {"pool": pool},
    )
    for tokens in (4096, 131072):
        n_blocks = tokens // 512
        # worst case: the whole prompt is cached (every block is looked up) in both clusters
        hashes = [(7 << 9) + k for k in range(n_blocks)]
        local.insert(hashes, tokens, instance=3)
        pool.insert(hashes, tokens, instance=1)
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            router.route(tokens, hashes)
            samples.append((time.perf_counter() - start) * 1e6)
        p50, p99, worst = percentiles(samples)
        print(
            f"route(): {tokens:>6} tokens ({n_blocks} blocks, lookups in 2 clusters + decide): "
            f"p50 {p50:.1f} µs, p99 {p99:.1f} µs, max {worst:.0f} µs"
        )
        ids = [rng.randrange(150_000) for _ in range(tokens)]
        hs = []
        for _ in range(200):
            start = time.perf_counter()
            block_hashes(ids)
            hs.append((time.perf_counter() - start) * 1e6)
        p50, p99, _ = percentiles(hs)
        print(f"block_hashes(): {tokens:>6} token ids: p50 {p50:.0f} µs, p99 {p99:.0f} µs")


if __name__ == "__main__":
    main()

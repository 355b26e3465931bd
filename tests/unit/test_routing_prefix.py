"""The prefix index: block matching, the hybrid-model snapshot rule, eviction, hashing."""

from __future__ import annotations

from array import array

from prfaas.routing import (
    BLOCK_TOKENS,
    PolicyError,
    PoolRoute,
    PrefixHit,
    PrefixIndex,
    Router,
    RoutingConfig,
    RoutingPolicy,
    Target,
    block_hashes,
)

B = BLOCK_TOKENS


def test_empty_index_misses() -> None:
    assert PrefixIndex().match([1, 2, 3], 3 * B) == PrefixHit(0, -1)


def test_a_continuation_reuses_the_whole_earlier_prompt() -> None:
    ix = PrefixIndex()
    ix.insert([1, 2, 3, 4], 4 * B - 100, instance=2)  # 3 full blocks + a partial one
    hit = ix.match([1, 2, 3, 9, 10, 11], 6 * B)
    assert hit == PrefixHit(3 * B, 2)  # the partial block was never cached


def test_hybrid_rule_no_snapshot_no_reuse() -> None:
    ix = PrefixIndex()
    ix.insert([1, 2, 3, 4, 5, 6], 6 * B)  # snapshot only at block 6
    # shares blocks 1-3 then diverges: the full-attention KV is there, the linear state is not
    assert ix.match([1, 2, 3, 7, 8], 5 * B).tokens == 0
    every = PrefixIndex(snapshot_interval_blocks=2)
    every.insert([1, 2, 3, 4, 5, 6], 6 * B)
    assert every.match([1, 2, 3, 7, 8], 5 * B).tokens == 2 * B  # longest snapshotted boundary


def test_shorter_request_ending_on_a_boundary_leaves_a_snapshot() -> None:
    ix = PrefixIndex()
    ix.insert([1, 2, 3, 4, 5, 6], 6 * B)
    ix.insert([1, 2, 3], 3 * B)  # e.g. the shared system prompt alone
    assert ix.match([1, 2, 3, 7, 8], 5 * B).tokens == 3 * B
    assert ix.match([1, 2, 3, 4, 5, 6, 7], 7 * B).tokens == 6 * B


def test_always_leaves_one_token_to_compute() -> None:
    ix = PrefixIndex()
    ix.insert([1, 2], 2 * B)
    assert ix.match([1, 2], 2 * B).tokens == 2 * B - 1


def test_eviction_keeps_the_index_within_capacity() -> None:
    ix = PrefixIndex(capacity_blocks=64)
    for r in range(100):
        ix.insert([r * 10 + k for k in range(4)], 4 * B)
    assert len(ix) <= 64
    assert ix.match([990, 991, 992, 993, 7], 5 * B).tokens == 4 * B  # the newest survive
    assert ix.match([0, 1, 2, 3, 7], 5 * B).tokens == 0  # the oldest went
    ix.clear()
    assert len(ix) == 0


def test_block_hashes_chain_and_are_stable() -> None:
    tokens = list(range(3 * B + 7))
    ids = block_hashes(tokens)
    assert len(ids) == 3  # full blocks only
    assert ids == block_hashes(array("q", tokens)) == block_hashes(tuple(tokens))
    other = tokens[:B] + [0] * (2 * B)
    ids2 = block_hashes(other)
    assert ids2[0] == ids[0] and ids2[1] != ids[1]
    assert all(0 <= h < 2**63 for h in ids)
    # the same block after a different prefix gets a different id (chained)
    assert block_hashes([5] * B + tokens[B : 2 * B])[1] != ids[1]
    assert block_hashes([]) == []
    # stable across processes (the router fleet must agree): int hashing is not randomised
    import os
    import subprocess
    import sys

    code = "from prfaas.routing import block_hashes; print(block_hashes(list(range(1024))))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    ).stdout
    assert other.strip() == str(block_hashes(list(range(1024))))


def test_router_looks_prefixes_up_in_every_cluster() -> None:
    local, pool = PrefixIndex(), PrefixIndex()
    tokens = list(range(80 * B))
    hashes = block_hashes(tokens)
    pool.insert(hashes[:70], 70 * B, instance=1)
    router = Router(
        RoutingPolicy(1, 20_000, (PoolRoute("pool", (), 100.0),)),
        2,
        {"pool": 2},
        RoutingConfig.static(),
        local,
        {"pool": pool},
    )
    d = router.route(len(tokens), hashes)
    assert (d.target, d.cached_tokens, d.instance) == (Target.POOL, 70 * B, 1)
    local.insert(hashes[:75], 75 * B, instance=0)
    d = router.route(len(tokens), hashes)  # scarce: local increment 5 blocks ≤ t
    assert (d.target, d.cached_tokens, d.instance) == (Target.LOCAL, 75 * B, 0)
    assert PolicyError  # re-exported for routers that parse the status

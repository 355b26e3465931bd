"""Per-cluster prefix index over 512-token block hashes, with the hybrid-model rule (paper §3.2).

A hybrid model (KDA/linear or SWA layers + full-attention layers) caches two kinds of state:

- full-attention KV, per block: any cached leading run of blocks is reusable;
- linear/SWA recurrent state, per *position*: reusable only at exactly the length where a
  snapshot was taken.

So a cached prefix is usable only up to the longest block-aligned prefix whose blocks are all
cached **and** at whose end a state snapshot exists. Snapshots are taken where a prefill ends
(the last full block of each prompt) and, if ``snapshot_interval_blocks`` > 0, every that many
blocks along the way (engines that checkpoint periodically). Partial blocks are never cached
(prefix-cache blocks must be fully populated before reuse).

Hashes are chained (block ``k``'s id identifies the whole prefix up to it), as in the Mooncake
trace's ``hash_ids``; ``block_hashes`` computes such ids from token ids for the router.

The index is per cluster: a cluster's hybrid prefix cache pool spans all its machines, so any
instance can load a cached prefix (over RDMA); the instance that computed it last is the
cache-affine one (hot in its HBM). Capacity is in blocks, least-recently-written evicted first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

BLOCK_TOKENS = 512
_NO_INSTANCE = -1
_MASK = (1 << 63) - 1


class PrefixHit(NamedTuple):
    """The usable cached prefix in one cluster, and the instance that holds it hot (-1: none)."""

    tokens: int
    instance: int = _NO_INSTANCE


MISS = PrefixHit(0, _NO_INSTANCE)


class PrefixIndex:
    """Which chained block hashes a cluster holds, where, and where state snapshots exist."""

    __slots__ = (
        "_clock",
        "_owner",
        "_snap",
        "_stamp",
        "block_tokens",
        "capacity_blocks",
        "snapshot_interval_blocks",
    )

    def __init__(
        self,
        capacity_blocks: int = 1 << 20,
        block_tokens: int = BLOCK_TOKENS,
        snapshot_interval_blocks: int = 0,
    ) -> None:
        if capacity_blocks < 1 or block_tokens < 1 or snapshot_interval_blocks < 0:
            raise ValueError("capacity_blocks and block_tokens >= 1, snapshot interval >= 0")
        self.capacity_blocks = capacity_blocks
        self.block_tokens = block_tokens
        self.snapshot_interval_blocks = snapshot_interval_blocks
        self._owner: dict[int, int] = {}  # block hash → instance that wrote it last
        self._stamp: dict[int, int] = {}  # block hash → write clock (for eviction)
        self._snap: set[int] = set()  # block hashes at whose end a state snapshot exists
        self._clock = 0

    def __len__(self) -> int:
        return len(self._owner)

    def match(self, hashes: Sequence[int], total_tokens: int) -> PrefixHit:
        """Usable cached prefix for a prompt of ``total_tokens``: O(blocks), no allocation.

        At least one token is always left to compute (the engine needs the last logits).
        """
        owner, snap = self._owner, self._snap
        full = min(len(hashes), total_tokens // self.block_tokens)
        best, where = 0, _NO_INSTANCE
        for k in range(full):
            h = hashes[k]
            o = owner.get(h)
            if o is None:
                break
            if h in snap:
                best, where = k + 1, o
        if best == 0:
            return MISS
        return PrefixHit(min(best * self.block_tokens, total_tokens - 1), where)

    def insert(
        self, hashes: Sequence[int], total_tokens: int, instance: int = _NO_INSTANCE
    ) -> None:
        """Record a completed prefill (or an arrived KV transfer) of ``total_tokens``."""
        full = min(len(hashes), total_tokens // self.block_tokens)
        if full == 0:
            return
        self._clock += 1
        clock, owner, stamp = self._clock, self._owner, self._stamp
        every = self.snapshot_interval_blocks
        for k in range(full):
            h = hashes[k]
            owner[h] = instance
            stamp[h] = clock
            if every and (k + 1) % every == 0:
                self._snap.add(h)
        self._snap.add(hashes[full - 1])
        if len(owner) > self.capacity_blocks:
            self._evict()

    def _evict(self) -> None:
        # amortised LRU: drop the oldest eighth in one sort rather than keeping an ordered list
        keep = self.capacity_blocks - self.capacity_blocks // 8
        victims = sorted(self._stamp, key=self._stamp.__getitem__)[: len(self._owner) - keep]
        for h in victims:
            del self._owner[h], self._stamp[h]
            self._snap.discard(h)

    def clear(self) -> None:
        self._owner.clear()
        self._stamp.clear()
        self._snap.clear()


def block_hashes(tokens: Sequence[int], block_tokens: int = BLOCK_TOKENS) -> list[int]:
    """Chained 63-bit ids of the *full* blocks of a token sequence.

    Block ``k``'s id hashes block ``k``'s tokens together with block ``k-1``'s id, so equal ids
    mean equal prefixes (like the Mooncake trace's ``hash_ids``). CPython's tuple-of-int hash
    is not randomised per process (only str/bytes hashing is), so every router replica running
    the same image computes the same ids; it is also ~3× cheaper than a cryptographic digest
    (about 1 ms for 128K tokens, once per request at ingress).
    """
    out: list[int] = []
    prev = 0
    for start in range(0, len(tokens) - block_tokens + 1, block_tokens):
        prev = hash((prev, tuple(tokens[start : start + block_tokens]))) & _MASK
        out.append(prev)
    return out

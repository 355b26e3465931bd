"""What each threshold costs a fleet's PD cluster, on every resource, for every candidate ``t``.

For cluster i and threshold t (a grid in ``thresholdStepTokens`` steps), per request arriving:

- ``local[t]  = E[T_local(L); L ≤ t]``  PD-P seconds (a partial expectation: 0 where L > t),
- ``pool[k][t] = E[T_k(L); L > t]``     seconds on an instance of pool k, if all its long
  requests went to k,
- ``kv[t]     = E[S(L); L > t]``        gigabits of KVCache leaving a pool,
- ``p[t]      = P(L > t)``.

These are the paper's subset means times the subset's probability (``subset_mean``): the single
cluster planner's ``Θ_prfaas/p = min(N/(p·E[T|L>t]), B/(p·E[S|L>t]))`` is ``min(N/pool, B/kv)``
here. Every pool and KV term falls as t rises and the local term rises: that monotonicity is what
makes the fleet planner exact (``fleet_planner``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prfaas.model.curves import Curve, CurveError, FloatArray
from prfaas.model.fleet import Fleet, FleetCluster
from prfaas.model.planner import PlanError
from prfaas.model.units import BITS_PER_GBIT, BITS_PER_MIB
from prfaas.model.workload import LengthGrid


@dataclass(frozen=True)
class ClusterCurves:
    name: str
    thresholds: FloatArray  # (T,)
    p: FloatArray  # (T,)
    local: FloatArray  # (T,) non-decreasing
    kv: FloatArray  # (T,) non-increasing, Gbit
    pool: FloatArray  # (K_i, T) non-increasing, one row per linked pool
    pools: tuple[int, ...]  # fleet pool index of each row
    link_budget: FloatArray  # (K_i,) Gbps, the link's capacity × usable fraction
    decode_rate: float  # Θ_pd-d of one instance, req/s
    instances: int
    min_prefill: int
    min_decode: int
    demand: float
    l_mean: FloatArray  # (2, T): E[L | L > t], E[L | L ≤ t] (NaN where empty)
    local_all: float  # E[T_local(L)]: every request prefilled locally
    l_all: float  # E[L]


def _curve(what: str, build: object, top: float) -> Curve:
    try:
        return build.curve(top)  # type: ignore[attr-defined, no-any-return]
    except CurveError as exc:
        raise PlanError(f"{what}: {exc}") from None


def _thresholds(c: FleetCluster, top: float) -> FloatArray:
    if c.fixed_threshold_tokens is not None:
        return np.array([float(c.fixed_threshold_tokens)])
    step = c.threshold_step_tokens
    return np.arange(0.0, math.ceil(top / step) * step + step, step)


class _Curves:
    """Each distinct curve once, evaluated on a length axis; rows keyed by profile."""

    def __init__(self, fleet: Fleet, top: float) -> None:
        self.fleet, self.top = fleet, top
        self.keys: dict[str, int] = {}
        self.makers: list[tuple[str, Curve, float]] = []

    def row(self, key: str, what: str, build: object, scale: float = 1.0) -> int:
        if key not in self.keys:
            self.keys[key] = len(self.makers)
            self.makers.append((what, _curve(what, build, self.top), scale))
        return 2 + self.keys[key]

    def rows_for(self, c: FleetCluster) -> tuple[int, ...]:
        local = self.row(
            "local " + c.instance.prefill.model_dump_json(),
            f"clusters[{c.name}].instance.prefill",
            c.instance.prefill,
        )
        kv = self.row(
            "kv", "model.kvCache", self.fleet.model.kv_cache, BITS_PER_MIB / BITS_PER_GBIT
        )
        pools = []
        for link in c.links:
            pool = self.fleet.pools[self.fleet.pool_index(link.pool)]
            pools.append(
                self.row(
                    "pool " + pool.instance.prefill.model_dump_json(),
                    f"pools[{pool.name}].instance.prefill",
                    pool.instance.prefill,
                )
            )
        return (0, 1, local, kv, *pools)

    def evaluate(self, lengths: FloatArray) -> FloatArray:
        out = np.empty((2 + len(self.makers), lengths.size))
        out[0], out[1] = 1.0, lengths
        for r, (what, make, scale) in enumerate(self.makers):
            values = np.asarray(make(lengths), dtype=np.float64) * scale
            if not np.all(np.isfinite(values)):
                raise PlanError(f"{what}: the profile gives non-finite values")
            out[2 + r] = values
        return out


def _binned_one(
    c: FleetCluster, grid: LengthGrid, curves: _Curves, rows: tuple[int, ...]
) -> FloatArray:
    """(rows, T) cumulative sums at each threshold, for a cluster on its own grid."""
    values = curves.evaluate(grid.lengths)[list(rows)] * grid.weights
    cum = np.zeros((len(rows), grid.lengths.size + 1))
    np.cumsum(values, axis=1, out=cum[:, 1:])
    idx = np.searchsorted(grid.lengths, _thresholds(c, grid.max), side="right")
    return np.asarray(cum[:, idx], dtype=np.float64)


def _binned_group(
    grids: list[LengthGrid], curves: _Curves, rows: list[tuple[int, ...]], step: int, top: float
) -> list[FloatArray]:
    """The same for clusters whose grids are one point per token and whose thresholds are the
    same ``step`` grid: one batched product over ``step``-token bins instead of one pass each."""
    n_bins = math.ceil(top / step)
    axis = np.arange(1.0, n_bins * step + 1)
    weights = np.zeros((len(grids), axis.size))
    for g, grid in enumerate(grids):  # one point per token: a slice, not a scatter
        weights[g, int(grid.min) - 1 : int(grid.max)] = grid.weights
    values = curves.evaluate(axis)
    per_bin = np.einsum(
        "gbs,rbs->bgr",
        weights.reshape(len(grids), n_bins, step),
        values.reshape(values.shape[0], n_bins, step),
        optimize=True,
    )  # (bins, clusters, rows)
    cum = np.zeros((n_bins + 1, len(grids), values.shape[0]))
    np.cumsum(per_bin, axis=0, out=cum[1:])
    return [np.asarray(cum[:, g, list(r)].T) for g, r in enumerate(rows)]


def _groupable(c: FleetCluster, grid: LengthGrid) -> tuple[int, float] | None:
    per_token = grid.lengths.size == int(grid.max - grid.min) + 1
    if c.fixed_threshold_tokens is not None or not per_token:
        return None
    return c.threshold_step_tokens, grid.max


def cluster_curves(fleet: Fleet) -> list[ClusterCurves]:
    top = max(float(c.workload.input_length.max_tokens) for c in fleet.clusters)
    curves = _Curves(fleet, top)
    rows = [curves.rows_for(c) for c in fleet.clusters]
    grids = [c.workload.input_length.grid() for c in fleet.clusters]
    groups: dict[tuple[int, float], list[int]] = {}
    binned: dict[int, FloatArray] = {}
    for i, c in enumerate(fleet.clusters):
        key = _groupable(c, grids[i])
        if key is None:
            binned[i] = _binned_one(c, grids[i], curves, rows[i])
        else:
            groups.setdefault(key, []).append(i)
    for (step, gtop), members in groups.items():
        sums = _binned_group(
            [grids[i] for i in members], curves, [rows[i] for i in members], step, gtop
        )
        binned.update(zip(members, sums, strict=True))
    return [
        _assemble(fleet, c, binned[i], grids[i], curves, rows[i])
        for i, c in enumerate(fleet.clusters)
    ]


def _assemble(
    fleet: Fleet,
    c: FleetCluster,
    below: FloatArray,
    grid: LengthGrid,
    curves: _Curves,
    rows: tuple[int, ...],
) -> ClusterCurves:
    """From cumulative sums below each threshold (rows: ones, length, local, KV, pools...)."""
    thresholds = _thresholds(c, grid.max)
    if c.fixed_threshold_tokens is None:
        total = below[:, -1:]
    else:  # one threshold: the totals come from the whole grid
        values = curves.evaluate(grid.lengths)[list(rows)] * grid.weights
        total = values.sum(axis=1, keepdims=True)
    above = total - below
    empty_above = above[0] <= 1e-15
    empty_below = below[0] <= 1e-15
    p = np.where(empty_above, 0.0, np.clip(above[0], 0.0, 1.0))
    p = np.where(empty_below, 1.0, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        l_long = np.where(empty_above, np.nan, above[1] / above[0])
        l_short = np.where(empty_below, np.nan, below[1] / below[0])
    decode = c.instance.decode
    assert decode is not None  # FleetCluster guarantees it
    return ClusterCurves(
        name=c.name,
        thresholds=thresholds,
        p=p,
        local=np.maximum.accumulate(np.where(empty_below, 0.0, below[2])),
        kv=np.where(empty_above, 0.0, above[3]),
        pool=np.where(empty_above[None, :], 0.0, above[4:]),
        pools=tuple(fleet.pool_index(link.pool) for link in c.links),
        link_budget=np.array([link.budget_gbps for link in c.links], dtype=np.float64),
        decode_rate=decode.requests_per_second(c.workload.output_tokens),
        instances=c.instances,
        min_prefill=c.min_prefill,
        min_decode=c.min_decode,
        demand=c.demand_rps,
        l_mean=np.stack([l_long, l_short]),
        local_all=float(total[2, 0]),
        l_all=float(total[1, 0]),
    )

"""The one linear program of the fleet planner: how the clusters' offloaded requests spread over
the pools, given each cluster's operating point (rate, threshold, split).

Variables: ``x[i,k]``, the fraction of cluster i's offloaded requests that pool k prefills, for
every link (i, k); and either ``θ`` (``utilisation``: the highest load / capacity over every pool's
compute and egress and every link, minimised) or the pool sizes ``N_k`` (``size_pools``: the
cheapest sizes that carry the load). Per cluster ``Σ_k x[i,k] = 1`` (written ``≥ 1``: spare
fractions only cost). Solved by HiGHS (``highspy``): a few hundred variables at most, solved in
about a millisecond, so the planner can afford one per bisection step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from highspy import HighsLp, HighsModelStatus, MatrixFormat
from highspy._core import _Highs  # the public Highs prints a banner on stdout when built

from prfaas.model.curves import FloatArray


@dataclass(frozen=True)
class Load:
    """One cluster at its operating point: per linked pool, instances and Gbps it would need if
    all its offloaded requests went there (``compute[r]``, ``egress``), and its link budgets."""

    cluster: int
    pools: tuple[int, ...]
    compute: FloatArray  # (K_i,) instances
    egress: float  # Gbps
    links: FloatArray  # (K_i,) Gbps


@dataclass(frozen=True)
class Spread:
    theta: float  # highest utilisation; > 1: the operating points do not fit; inf: impossible
    fractions: dict[int, FloatArray]  # cluster → fraction per linked pool
    pressure: dict[int, float]  # cluster → |dual| of its row: > 0 where more of it raises θ
    sizes: FloatArray | None = None  # pool sizes (``size_pools``)


class _Rows:
    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.b: list[float] = []

    def add(self, cols: Sequence[int], vals: Sequence[float], rhs: float) -> int:
        row = len(self.b)
        self.r += [row] * len(cols)
        self.c += list(cols)
        self.v += list(vals)
        self.b.append(rhs)
        return row


def _build(loads: Sequence[Load]) -> tuple[_Rows, list[tuple[int, int, int]], int]:
    """Cluster rows and the variable of each link: (variable, cluster load index, row)."""
    rows, links = _Rows(), []
    var = 0
    for li, load in enumerate(loads):
        cols = list(range(var, var + len(load.pools)))
        rows.add(cols, [-1.0] * len(cols), -1.0)
        links += [(var + r, li, r) for r in range(len(load.pools))]
        var += len(load.pools)
    return rows, links, var


def _pool_rows(
    loads: Sequence[Load],
    links: list[tuple[int, int, int]],
    n_pools: int,
    egress: Sequence[float | None],
) -> tuple[list[list[tuple[int, float]]], list[list[tuple[int, float]]]]:
    compute: list[list[tuple[int, float]]] = [[] for _ in range(n_pools)]
    kv: list[list[tuple[int, float]]] = [[] for _ in range(n_pools)]
    for v, li, r in links:
        load = loads[li]
        k = load.pools[r]
        compute[k].append((v, float(load.compute[r])))
        if egress[k] is not None:
            kv[k].append((v, load.egress))
    return compute, kv


def utilisation(
    loads: Sequence[Load], sizes: Sequence[float] | FloatArray, egress: Sequence[float | None]
) -> Spread:
    """Minimise the highest utilisation θ over pool compute, pool egress and links."""
    if any(not load.pools for load in loads):
        return Spread(math.inf, {}, {})
    if not loads:
        return Spread(0.0, {}, {})
    rows, links, n = _build(loads)
    theta = n
    compute, kv = _pool_rows(loads, links, len(sizes), egress)
    for k, entries in enumerate(compute):
        if entries:
            cols, vals = zip(*entries, strict=True)
            rows.add([*cols, theta], [*vals, -float(sizes[k])], 0.0)
    for k, entries in enumerate(kv):
        budget = egress[k]
        if entries and budget is not None:
            cols, vals = zip(*entries, strict=True)
            rows.add([*cols, theta], [*vals, -budget], 0.0)
    for v, li, r in links:
        load = loads[li]
        rows.add([v, theta], [load.egress, -float(load.links[r])], 0.0)
    c = np.zeros(n + 1)
    c[theta] = 1.0
    bounds = [(0.0, 1.0)] * n + [(0.0, None)]
    res = _solve(c, rows, n + 1, bounds)
    if res is None:
        return Spread(math.inf, {}, {})
    x, marginals = res
    return Spread(float(x[theta]), _fractions(loads, x), _pressure(loads, marginals))


def size_pools(
    loads: Sequence[Load],
    bounds: Sequence[tuple[float, float]],
    weights: Sequence[float],
    egress: Sequence[float | None],
) -> Spread | None:
    """The pool sizes within ``bounds`` of least ``Σ weight·N`` that carry ``loads`` (continuous;
    round up). ``None``: not even the upper bounds do."""
    if any(not load.pools for load in loads):
        return None
    rows, links, n = _build(loads)
    compute, kv = _pool_rows(loads, links, len(bounds), egress)
    for k, entries in enumerate(compute):
        cols, vals = zip(*entries, strict=True) if entries else ((), ())
        rows.add([*cols, n + k], [*vals, -1.0], 0.0)
    for k, entries in enumerate(kv):
        budget = egress[k]
        if entries and budget is not None:
            cols, vals = zip(*entries, strict=True)
            rows.add(list(cols), list(vals), budget)
    var_bounds: list[tuple[float, float | None]] = []
    for _, li, r in links:
        load = loads[li]
        cap = float(load.links[r]) / load.egress if load.egress > 0 else 1.0
        var_bounds.append((0.0, min(1.0, cap)))
    var_bounds += [(lo, hi) for lo, hi in bounds]
    c = np.concatenate([np.zeros(n), np.asarray(weights, dtype=np.float64)])
    res = _solve(c, rows, n + len(bounds), var_bounds)
    if res is None:
        return None
    x, marginals = res
    return Spread(1.0, _fractions(loads, x), _pressure(loads, marginals), sizes=x[n:])


def _solve(
    c: FloatArray, rows: _Rows, n: int, bounds: Sequence[tuple[float, float | None]]
) -> tuple[FloatArray, FloatArray] | None:
    """min c·x subject to rows (≤ b) and bounds: (x, row duals), or None if infeasible."""
    r, col, v = np.asarray(rows.r), np.asarray(rows.c), np.asarray(rows.v, dtype=np.float64)
    order = np.lexsort((r, col))
    lp = HighsLp()
    lp.num_col_, lp.num_row_ = n, len(rows.b)
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = np.array([lo for lo, _ in bounds], dtype=np.float64)
    lp.col_upper_ = np.array([np.inf if hi is None else hi for _, hi in bounds], dtype=np.float64)
    lp.row_lower_ = np.full(len(rows.b), -np.inf)
    lp.row_upper_ = np.asarray(rows.b, dtype=np.float64)
    lp.a_matrix_.format_ = MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(col[order], np.arange(n + 1)).astype(np.int32)
    lp.a_matrix_.index_ = r[order].astype(np.int32)
    lp.a_matrix_.value_ = v[order]
    h = _Highs()
    h.setOptionValue("output_flag", False)
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != HighsModelStatus.kOptimal:
        return None
    sol = h.getSolution()
    return np.asarray(sol.col_value, dtype=np.float64), np.asarray(sol.row_dual, dtype=np.float64)


def _fractions(loads: Sequence[Load], x: FloatArray) -> dict[int, FloatArray]:
    out, var = {}, 0
    for load in loads:
        f = np.clip(x[var : var + len(load.pools)], 0.0, 1.0)
        total = float(f.sum())
        out[load.cluster] = f / total if total > 0 else f
        var += len(load.pools)
    return out


def _pressure(loads: Sequence[Load], marginals: FloatArray) -> dict[int, float]:
    return {load.cluster: abs(float(marginals[i])) for i, load in enumerate(loads)}

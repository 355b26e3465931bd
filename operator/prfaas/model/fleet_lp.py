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


def _columns(loads: Sequence[Load]) -> tuple[np.ndarray, ...]:
    """Per variable (one per link of each load): its load, pool, compute, egress, link budget."""
    owner = np.concatenate([np.full(len(ld.pools), li) for li, ld in enumerate(loads)])
    pool = np.concatenate([np.asarray(ld.pools, dtype=np.int64) for ld in loads])
    compute = np.concatenate([ld.compute for ld in loads])
    egress = np.concatenate([np.full(len(ld.pools), ld.egress) for ld in loads])
    links = np.concatenate([ld.links for ld in loads])
    return owner, pool, compute, egress, links


def utilisation(
    loads: Sequence[Load], sizes: Sequence[float] | FloatArray, egress: Sequence[float | None]
) -> Spread:
    """Minimise the highest utilisation θ over pool compute, pool egress and links."""
    if any(not load.pools for load in loads):
        return Spread(math.inf, {}, {})
    if not loads:
        return Spread(0.0, {}, {})
    owner, pool, compute, kv, links = _columns(loads)
    n, n_pools, n_loads = owner.size, len(sizes), len(loads)
    var = np.arange(n)
    budgets = np.array([np.nan if e is None else e for e in egress], dtype=np.float64)
    capped = ~np.isnan(budgets)
    egress_row = np.full(n_pools, -1)
    egress_row[capped] = n_loads + n_pools + np.arange(int(capped.sum()))
    link_row = n_loads + n_pools + int(capped.sum()) + var
    has_kv = capped[pool]
    theta = n
    rows = np.concatenate([
        owner, n_loads + pool, egress_row[pool][has_kv], link_row,  # variable columns
        n_loads + np.arange(n_pools), egress_row[capped], link_row,  # θ column
    ])  # fmt: skip
    cols = np.concatenate(
        [var, var, var[has_kv], var, np.full(n_pools + int(capped.sum()) + n, theta)]
    )
    vals = np.concatenate([
        -np.ones(n), compute, kv[has_kv], kv,
        -np.asarray(sizes, dtype=np.float64), -budgets[capped], -links,
    ])  # fmt: skip
    n_rows = n_loads + n_pools + int(capped.sum()) + n
    rhs = np.zeros(n_rows)
    rhs[:n_loads] = -1.0
    c = np.zeros(n + 1)
    c[theta] = 1.0
    lower = np.zeros(n + 1)
    upper = np.concatenate([np.ones(n), [np.inf]])
    res = _solve_arrays(c, rows, cols, vals, rhs, lower, upper)
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
    lower = np.array([lo for lo, _ in bounds], dtype=np.float64)
    upper = np.array([np.inf if hi is None else hi for _, hi in bounds], dtype=np.float64)
    return _solve_arrays(
        c, np.asarray(rows.r), np.asarray(rows.c), np.asarray(rows.v, dtype=np.float64),
        np.asarray(rows.b, dtype=np.float64), lower, upper,
    )  # fmt: skip


def _solve_arrays(
    c: FloatArray,
    r: np.ndarray,
    col: np.ndarray,
    v: FloatArray,
    rhs: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
) -> tuple[FloatArray, FloatArray] | None:
    """min c·x subject to A x ≤ rhs (A from triplets) and bounds: (x, row duals), or None if
    infeasible."""
    n = c.size
    order = np.lexsort((r, col))
    lp = HighsLp()
    lp.num_col_, lp.num_row_ = n, rhs.size
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = lower
    lp.col_upper_ = upper
    lp.row_lower_ = np.full(rhs.size, -np.inf)
    lp.row_upper_ = rhs
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

"""The fleet planner: every PD cluster's threshold and split, its share of every pool, and each
pool's size, planned together (the paper's global scheduler, §3.1). README "Fleets" has the
formulation; in short:

- A cluster at rate Λ is best run at its *operating point*: the fewest decode instances that
  carry Λ (``N_d = ⌈Λ/Θ_d⌉``), every other machine prefilling, and the highest threshold its PD-P
  instances keep up with (``Λ·E[T_local; L ≤ t] ≤ N_p``). Every pool and link cost falls as t
  rises, so this point needs less of *every* shared resource than any other (t, N_p/N_d) that
  carries Λ: choosing it loses nothing.
- Given every cluster's operating point, whether the pools can carry the offloaded requests is a
  linear program over how each cluster spreads them (``fleet_lp``); it is monotone in the rates.
- Objective: max-min fairness of the satisfaction Λ_i / D_i (no cluster starved to feed
  another), by progressive filling: raise a common level until a shared resource saturates
  (bisection, exact to ``tolerance``), freeze the clusters that saturate it (the dual of their row
  is positive) or that hit their own limit, continue with the rest.
- Pools: sized to the fewest instances that carry the result (throughput) or the cheapest that
  serve every demand (cost), within their bounds: an LP rounded up, so at most one instance per
  pool above the optimum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from prfaas.model.curves import FloatArray
from prfaas.model.fleet import Fleet
from prfaas.model.fleet_curves import ClusterCurves, cluster_curves
from prfaas.model.fleet_lp import Load, Spread, size_pools, utilisation
from prfaas.model.planner import PlanError

FleetPlanKind = Literal["joint", "independent", "homogeneous"]
Limit = Literal["demand", "cluster", "pools"]
_TIE = 1e-9


@dataclass(frozen=True)
class PoolShare:
    pool: str
    fraction: float  # of the cluster's offloaded requests
    rate_rps: float  # offloaded requests per second to this pool
    instances: float  # pool instances busy with them
    egress_gbps: float  # KVCache over the link
    link_budget_gbps: float


@dataclass(frozen=True)
class ClusterPlan:
    name: str
    demand_rps: float
    throughput_rps: float  # Λ_i: the rate this plan carries
    threshold_tokens: int | None  # None: never offload (no pool)
    offload_fraction: float
    n_prefill: int
    n_decode: int
    l_long: float | None
    l_short: float | None
    pd_prefill_rps: float  # Θ_pd-p/(1−p): the local prefill bound
    pd_decode_rps: float  # Θ_pd-d
    shares: tuple[PoolShare, ...]
    limit: Limit  # what stopped it: its own demand level, its own machines/links, shared pools

    @property
    def satisfaction(self) -> float:
        return self.throughput_rps / self.demand_rps

    @property
    def served_rps(self) -> float:
        return min(self.throughput_rps, self.demand_rps)

    @property
    def egress_gbps(self) -> float:
        return sum(s.egress_gbps for s in self.shares)


@dataclass(frozen=True)
class PoolPlan:
    name: str
    n_prfaas: int
    bounds: tuple[int, int]
    busy_instances: float  # Σ over clusters of their compute share
    egress_gbps: float
    egress_budget_gbps: float | None
    cost_per_hour: float | None

    @property
    def utilisation(self) -> float:
        return self.busy_instances / self.n_prfaas if self.n_prfaas else 0.0


@dataclass(frozen=True)
class FleetPlan:
    kind: FleetPlanKind
    clusters: tuple[ClusterPlan, ...]
    pools: tuple[PoolPlan, ...]

    @property
    def demand_rps(self) -> float:
        return sum(c.demand_rps for c in self.clusters)

    @property
    def throughput_rps(self) -> float:
        return sum(c.throughput_rps for c in self.clusters)

    @property
    def served_rps(self) -> float:
        return sum(c.served_rps for c in self.clusters)

    @property
    def satisfaction(self) -> float:
        """The lowest Λ_i / D_i: the largest multiple of every demand the plan carries."""
        return min(c.satisfaction for c in self.clusters)

    @property
    def cost_per_hour(self) -> float | None:
        costs = [p.cost_per_hour for p in self.pools]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)

    def cluster(self, name: str) -> ClusterPlan:
        return next(c for c in self.clusters if c.name == name)


@dataclass(frozen=True)
class FleetResult:
    joint: FleetPlan
    independent: FleetPlan
    homogeneous: FleetPlan
    rounds: int  # progressive-filling rounds
    programs: int  # linear programs solved
    seconds: float

    def plans(self) -> tuple[FleetPlan, FleetPlan, FleetPlan]:
        return self.joint, self.independent, self.homogeneous


# -- one cluster -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """A cluster's operating point at ``rate``: threshold index ``j``, the split."""

    rate: float
    j: int
    n_prefill: int
    n_decode: int


def operating_point(cc: ClusterCurves, rate: float) -> Point | None:
    """The point that carries ``rate`` with the least of every shared resource; None: cannot."""
    if rate <= 0:
        return Point(0.0, len(cc.thresholds) - 1, cc.instances - cc.min_decode, cc.min_decode)
    n_d = max(cc.min_decode, math.ceil(rate / cc.decode_rate * (1 - 1e-12)))
    n_p = cc.instances - n_d
    if n_p < cc.min_prefill:
        return None
    j = int(np.searchsorted(cc.local, n_p / rate * (1 + 1e-12), side="right")) - 1
    return None if j < 0 else Point(rate, j, n_p, n_d)


def alone(cc: ClusterCurves, sizes: FloatArray, budgets: FloatArray) -> tuple[float, int, int]:
    """The best (Λ, threshold index, N_p) of a cluster alone with ``sizes`` instances of its
    linked pools and ``budgets`` Gbps to each (the single-cluster planner's grid, several pools).
    Ties: the highest threshold (least egress), then more decode."""
    n_p = np.arange(cc.min_prefill, cc.instances - cc.min_decode + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        compute = np.where(cc.pool > 0, sizes[:, None] / cc.pool, np.inf)
        egress = np.where(cc.kv > 0, budgets[:, None] / cc.kv[None, :], np.inf)
        pool = np.minimum(compute, egress).sum(axis=0) if len(cc.pools) else np.zeros_like(cc.p)
        pool = np.where(cc.p > 0, pool, np.inf)
        local = np.where(cc.local > 0, n_p[:, None] / cc.local[None, :], np.inf)
    decode = (cc.instances - n_p) * cc.decode_rate
    lam = np.minimum(np.minimum(local, pool[None, :]), decode[:, None])
    best = float(lam.max())
    near = np.argwhere(lam >= best * (1 - _TIE))
    i, j = min(near, key=lambda c: (-c[1], c[0]))
    return best, int(j), int(n_p[i])


def _load(c: int, cc: ClusterCurves, pt: Point) -> Load | None:
    if cc.p[pt.j] <= 0 or pt.rate <= 0:
        return None
    return Load(
        cluster=c,
        pools=cc.pools,
        compute=pt.rate * cc.pool[:, pt.j],
        egress=pt.rate * float(cc.kv[pt.j]),
        links=cc.link_budget,
    )


# -- the fleet -------------------------------------------------------------------------------
class _Solver:
    def __init__(self, fleet: Fleet, curves: list[ClusterCurves], sizes: FloatArray) -> None:
        self.fleet = fleet
        self.curves = curves
        self.sizes = sizes
        self.egress: list[float | None] = [
            p.egress.budget_gbps if p.egress else None for p in fleet.pools
        ]
        self.programs = 0

    def points(self, levels: FloatArray) -> list[Point]:
        out = []
        for cc, level in zip(self.curves, levels, strict=True):
            pt = operating_point(cc, level * cc.demand)
            if pt is None:
                raise PlanError(f"clusters[{cc.name}]: internal: level {level:g} is out of reach")
            out.append(pt)
        return out

    def spread(self, levels: FloatArray) -> tuple[Spread, list[Point]]:
        pts = self.points(levels)
        loads = [ld for c, (cc, pt) in enumerate(zip(self.curves, pts, strict=True))
                 if (ld := _load(c, cc, pt)) is not None]  # fmt: skip
        self.programs += 1
        return utilisation(loads, self.sizes, self.egress), pts

    def theta(self, levels: FloatArray) -> float:
        return self.spread(levels)[0].theta


def _egress(fleet: Fleet, k: int) -> float:
    egress = fleet.pools[k].egress
    return math.inf if egress is None else egress.budget_gbps


def _caps(curves: list[ClusterCurves], fleet: Fleet, sizes: FloatArray) -> FloatArray:
    """Each cluster's satisfaction if it had every pool it links to for itself."""
    caps = []
    for cc in curves:
        budgets = np.minimum(cc.link_budget, [_egress(fleet, k) for k in cc.pools])
        lam, _, _ = alone(cc, sizes[list(cc.pools)], budgets)
        caps.append(lam / cc.demand)
    return np.array(caps) * (1 - 1e-9)


def _raise_level(
    solver: _Solver, levels: FloatArray, active: np.ndarray, caps: FloatArray, floor: float,
    tol: float,
) -> tuple[float, float]:  # fmt: skip
    """The highest common level ≤ the active clusters' caps that the pools carry, and the
    lowest level above it found infeasible (``tol`` above it)."""

    def at(s: float) -> FloatArray:
        out = levels.copy()
        out[active] = np.minimum(s, caps[active])
        return out

    lo, hi = floor, float(caps[active].max())
    th_hi = solver.theta(at(hi))
    if th_hi <= 1.0:
        return hi, hi
    th_lo = solver.theta(at(lo)) if lo > 0 else 0.0
    bisect = False
    while hi - lo > tol * hi:
        if bisect or not math.isfinite(th_hi) or th_hi <= th_lo:
            s = (lo + hi) / 2
        else:  # secant on θ(s) = 1, kept inside the bracket
            s = lo + (1.0 - th_lo) * (hi - lo) / (th_hi - th_lo)
            s = min(max(s, lo + 0.02 * (hi - lo)), hi - 0.02 * (hi - lo))
        th = solver.theta(at(s))
        if th <= 1.0:
            lo, th_lo = s, th
        else:
            hi, th_hi = s, th
        bisect = not bisect
    return lo, hi


def _fill(solver: _Solver, caps: FloatArray, tol: float) -> tuple[FloatArray, list[Limit], int]:
    """Progressive filling: max-min fairness of Λ_i / D_i."""
    n = len(caps)
    levels = np.zeros(n)
    limits: list[Limit] = ["pools"] * n
    active = np.ones(n, dtype=bool)
    floor, rounds = 0.0, 0
    while active.any():
        rounds += 1
        s, above = _raise_level(solver, levels, active, caps, floor, tol)
        levels[active] = np.minimum(s, caps[active])
        capped = active & (caps <= s * (1 + tol))
        for i in np.flatnonzero(capped):
            limits[i] = "cluster"
        active &= ~capped
        if not active.any():
            break
        blocked = _blocked(solver, levels, active, caps, above)
        if not blocked.any() or s <= floor * (1 + tol):
            blocked = active.copy()  # nobody can rise alone any more
        active &= ~blocked
        floor = s
    return levels, limits, rounds


def _blocked(
    solver: _Solver, levels: FloatArray, active: np.ndarray, caps: FloatArray, above: float
) -> np.ndarray:
    """The active clusters that cannot rise to ``above`` even alone: those whose row has a
    positive dual (more of it raises the peak utilisation) and that, raised by themselves, do
    not fit. (θ can jump at a level: a cluster that needs one more decode instance loses a
    prefill one and offloads much more; only that cluster is blocked, not its neighbours.)"""
    spread, _ = solver.spread(levels)
    pressed = np.array([spread.pressure.get(i, 0.0) > 1e-9 for i in range(len(levels))]) & active
    blocked = np.zeros(len(levels), dtype=bool)
    for i in np.flatnonzero(pressed):
        trial = levels.copy()
        trial[i] = min(above, caps[i])
        blocked[i] = solver.theta(trial) > 1.0
    # each could rise a step alone but not all together: the ones pressing on the saturated
    # resources stop (the usual water-filling rule)
    return blocked if blocked.any() else pressed


def _sizes_for(solver: _Solver, levels: FloatArray, weights: list[float]) -> FloatArray:
    """Pool sizes of least Σ weight·N within bounds carrying ``levels``, rounded up."""
    fleet = solver.fleet
    bounds = [(float(p.bounds()[0]), float(p.bounds()[1])) for p in fleet.pools]
    pts = solver.points(levels)
    loads = [ld for c, (cc, pt) in enumerate(zip(solver.curves, pts, strict=True))
             if (ld := _load(c, cc, pt)) is not None]  # fmt: skip
    solver.programs += 1
    sized = size_pools(loads, bounds, weights, solver.egress)
    if sized is None or sized.sizes is None:
        return solver.sizes
    up = np.ceil(sized.sizes - 1e-6 * np.maximum(sized.sizes, 1.0))
    return np.clip(up, [b[0] for b in bounds], [b[1] for b in bounds])


def _cluster_plan(
    cc: ClusterCurves,
    fleet: Fleet,
    pt: Point,
    fractions: FloatArray | None,
    limit: Limit,
    routed: bool = True,
) -> ClusterPlan:
    p = float(cc.p[pt.j])
    shares = []
    if fractions is not None and p > 0:
        for r, k in enumerate(cc.pools):
            f = float(fractions[r])
            if f <= 1e-9:
                continue
            shares.append(
                PoolShare(
                    pool=fleet.pools[k].name,
                    fraction=f,
                    rate_rps=float(pt.rate * p * f),
                    instances=float(pt.rate * cc.pool[r, pt.j] * f),
                    egress_gbps=float(pt.rate * cc.kv[pt.j] * f),
                    link_budget_gbps=float(cc.link_budget[r]),
                )
            )
    local = float(cc.local[pt.j])
    l_long, l_short = (float(v) for v in cc.l_mean[:, pt.j])
    return ClusterPlan(
        name=cc.name,
        demand_rps=cc.demand,
        throughput_rps=pt.rate,
        threshold_tokens=int(cc.thresholds[pt.j]) if routed else None,
        offload_fraction=p,
        n_prefill=pt.n_prefill,
        n_decode=pt.n_decode,
        l_long=None if math.isnan(l_long) else l_long,
        l_short=None if math.isnan(l_short) else l_short,
        pd_prefill_rps=pt.n_prefill / local if local > 0 else math.inf,
        pd_decode_rps=pt.n_decode * cc.decode_rate,
        shares=tuple(shares),
        limit=limit,
    )


def _pool_plans(
    fleet: Fleet, clusters: list[ClusterPlan], sizes: FloatArray
) -> tuple[PoolPlan, ...]:
    out = []
    for k, pool in enumerate(fleet.pools):
        mine = [s for c in clusters for s in c.shares if s.pool == pool.name]
        price = pool.instance.price_per_hour()
        n = round(float(sizes[k]))
        out.append(
            PoolPlan(
                name=pool.name,
                n_prfaas=n,
                bounds=pool.bounds(),
                busy_instances=float(sum(s.instances for s in mine)),
                egress_gbps=float(sum(s.egress_gbps for s in mine)),
                egress_budget_gbps=pool.egress.budget_gbps if pool.egress else None,
                cost_per_hour=None if price is None else n * price,
            )
        )
    return tuple(out)


def _joint(fleet: Fleet, curves: list[ClusterCurves]) -> tuple[FleetPlan, int, int]:
    upper = np.array([float(p.bounds()[1]) for p in fleet.pools])
    solver = _Solver(fleet, curves, upper)
    caps = _caps(curves, fleet, upper)
    tol = fleet.planner.tolerance
    levels, limits, rounds = _fill(solver, caps, tol)
    if fleet.planner.objective == "cost":
        prices = [p.instance.price_per_hour() for p in fleet.pools]
        if any(p is None for p in prices):
            missing = next(p.name for p, c in zip(fleet.pools, prices, strict=True) if c is None)
            raise PlanError(f"planner.objective cost needs pricePerGpuHour on pools[{missing}]")
        levels = np.minimum(levels, 1.0)
        weights = [float(p or 0.0) for p in prices]
    else:
        weights = [1.0] * len(fleet.pools)
    solver.sizes = _sizes_for(solver, levels, weights)
    spread, pts = solver.spread(levels)
    if spread.theta > 1 + 1e-6:  # rounding noise: fall back to the upper bounds
        solver.sizes = upper
        spread, pts = solver.spread(levels)
    if fleet.planner.objective == "cost":
        limits = ["demand" if lv >= 1.0 else lim for lv, lim in zip(levels, limits, strict=True)]
    plans = [
        _cluster_plan(cc, fleet, pt, spread.fractions.get(i), limits[i], bool(cc.pools))
        for i, (cc, pt) in enumerate(zip(curves, pts, strict=True))
    ]
    joint = FleetPlan("joint", tuple(plans), _pool_plans(fleet, plans, solver.sizes))
    return joint, rounds, solver.programs


def _independent(fleet: Fleet, curves: list[ClusterCurves]) -> FleetPlan:
    """Each cluster planned alone on an even split of every pool it shares (compute and
    egress), the rest of the fleet ignored."""
    sizes = np.array([float(p.bounds()[1]) for p in fleet.pools])
    users = np.zeros(len(fleet.pools))
    for cc in curves:
        users[list(cc.pools)] += 1
    plans = []
    for cc in curves:
        ks = list(cc.pools)
        share = sizes[ks] / np.maximum(users[ks], 1)
        budgets = np.minimum(cc.link_budget, [_egress(fleet, k) / users[k] for k in ks])
        lam, j, n_p = alone(cc, share, budgets)
        pt = Point(lam, j, n_p, cc.instances - n_p)
        fractions = None
        if ks:
            with np.errstate(divide="ignore", invalid="ignore"):
                caps = np.minimum(
                    np.where(cc.pool[:, j] > 0, share / cc.pool[:, j], np.inf),
                    np.where(cc.kv[j] > 0, budgets / cc.kv[j], np.inf),
                )
            caps = np.where(np.isfinite(caps), caps, 1.0)
            fractions = caps / caps.sum() if caps.sum() > 0 else caps
        plans.append(_cluster_plan(cc, fleet, pt, fractions, "cluster", bool(ks)))
    return FleetPlan("independent", tuple(plans), _pool_plans(fleet, plans, sizes))


def _homogeneous(fleet: Fleet, curves: list[ClusterCurves]) -> FleetPlan:
    """Each cluster as a homogeneous PD cluster of its machines plus its even share of the
    pools' instance count (the paper's equal-count baseline), rounded down; no pool."""
    sizes = np.array([float(p.bounds()[1]) for p in fleet.pools])
    users = np.zeros(len(fleet.pools))
    for cc in curves:
        users[list(cc.pools)] += 1
    plans = []
    for cc in curves:
        n = cc.instances + int(sum(sizes[k] / users[k] for k in cc.pools) + 1e-9)
        n_p = np.arange(max(cc.min_prefill, 1), n - cc.min_decode + 1)
        local = n_p / cc.local_all
        decode = (n - n_p) * cc.decode_rate
        i = int(np.argmax(np.minimum(local, decode)))
        plans.append(
            ClusterPlan(
                name=cc.name,
                demand_rps=cc.demand,
                throughput_rps=float(min(local[i], decode[i])),
                threshold_tokens=None,
                offload_fraction=0.0,
                n_prefill=int(n_p[i]),
                n_decode=int(n - n_p[i]),
                l_long=None,
                l_short=cc.l_all,
                pd_prefill_rps=float(local[i]),
                pd_decode_rps=float(decode[i]),
                shares=(),
                limit="cluster",
            )
        )
    return FleetPlan("homogeneous", tuple(plans), _pool_plans(fleet, plans, np.zeros(len(sizes))))


def _curves(fleet: Fleet) -> list[ClusterCurves]:
    curves = cluster_curves(fleet)
    for cc in curves:
        if cc.p[-1] > 0 and not cc.pools:
            raise PlanError(f"clusters[{cc.name}]: its fixed threshold offloads but it has no link")
    return curves


def plan_joint(fleet: Fleet) -> FleetPlan:
    """The joint plan alone (what the operator runs; no baselines)."""
    return _joint(fleet, _curves(fleet))[0]


def plan_fleet(fleet: Fleet) -> FleetResult:
    """Plan the fleet jointly, and the two baselines."""
    start = time.perf_counter()
    curves = _curves(fleet)
    joint, rounds, programs = _joint(fleet, curves)
    return FleetResult(
        joint=joint,
        independent=_independent(fleet, curves),
        homogeneous=_homogeneous(fleet, curves),
        rounds=rounds,
        programs=programs,
        seconds=time.perf_counter() - start,
    )

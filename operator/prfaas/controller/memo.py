"""The operator's plan memo: a planning scenario seen before is not searched again.

The planner is a pure function of its ``Scenario``, and a pass plans twice (the target, then the
best threshold for the counts running now). With declared workloads, or signals that did not
move, every pass of every PDCluster asks the same questions again, and identical clusters ask
each other's: ~40 ms of CPU per plan, one core for all of them (the GIL). The key is the whole
scenario (names aside: a plan does not depend on them), so a spec change, other signals or other
replica counts are a new key, never a stale plan. Only the plans are kept, not the search
surface (~230 KB each), and at most ``size`` of them, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from prfaas.controller import metrics
from prfaas.model.planner import Plan, PlanError, PlanResult, plan
from prfaas.model.scenario import Scenario

# the scenario without its names (the cluster's and the pool's): they never change a plan
_UNNAMED = {"pd_cluster": {"name"}, "prefill_pool": {"name"}}


@dataclass(frozen=True)
class Plans:
    """What the slow loop reads of a ``PlanResult``."""

    prfaas: Plan
    homogeneous: Plan


def scenario_key(scenario: Scenario) -> str:
    return scenario.model_dump_json(exclude=_UNNAMED)


class PlanMemo:
    """``Scenario → Plans``, bounded (LRU). Thread-safe, and one search per key: passes run in
    worker threads, and those asking for a plan another is searching wait for it (at start-up,
    1000 identical clusters in 16 threads would search it 16 times)."""

    def __init__(self, size: int = 4096, planner: Callable[[Scenario], PlanResult] = plan) -> None:
        self.size = size
        self.planner = planner
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._plans: OrderedDict[str, Future[Plans]] = OrderedDict()

    def __call__(self, scenario: Scenario) -> Plans:
        key = scenario_key(scenario)
        with self._lock:
            entry = self._plans.get(key)
            mine = entry is None
            if entry is None:
                entry = self._plans[key] = Future()
                while len(self._plans) > self.size:
                    self._plans.popitem(last=False)
                self.misses += 1
            else:
                self._plans.move_to_end(key)
                self.hits += 1
        metrics.PLANS.labels(memo="miss" if mine else "hit").inc()
        if mine:  # searched outside the lock: other passes go on meanwhile
            try:
                result = self.planner(scenario)
                entry.set_result(Plans(result.prfaas, result.homogeneous))
            except PlanError as exc:  # as deterministic as a plan: no search again either
                entry.set_exception(exc)
            except BaseException as exc:  # a bug, not an answer: not kept
                with self._lock:
                    if self._plans.get(key) is entry:
                        del self._plans[key]
                entry.set_exception(exc)
        try:
            return entry.result()
        except PlanError as exc:  # the same error each time: not one more frame each time
            raise exc.with_traceback(None) from None

    def __len__(self) -> int:
        return len(self._plans)

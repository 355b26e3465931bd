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
from dataclasses import dataclass

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
    """``Scenario → Plans``, thread-safe (passes run in worker threads), bounded (LRU)."""

    def __init__(self, size: int = 4096, planner: Callable[[Scenario], PlanResult] = plan) -> None:
        self.size = size
        self.planner = planner
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._plans: OrderedDict[str, Plans | PlanError] = OrderedDict()

    def __call__(self, scenario: Scenario) -> Plans:
        key = scenario_key(scenario)
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
                self.hits += 1
        if found is None:  # planned outside the lock: other passes go on meanwhile
            try:
                result = self.planner(scenario)
                found = Plans(result.prfaas, result.homogeneous)
            except PlanError as exc:  # as deterministic as a plan: no search again either
                found = exc
            with self._lock:
                self.misses += 1
                self._plans[key] = found
                while len(self._plans) > self.size:
                    self._plans.popitem(last=False)
        if isinstance(found, PlanError):
            raise found.with_traceback(None)  # not one more frame for each time it is raised
        return found

    def __len__(self) -> int:
        return len(self._plans)

"""The operator's plan memo: same scenario, same plans, without a second search; any input that
matters is a new key; bounded; failures remembered as failures."""

from __future__ import annotations

import threading
import time

import pytest

from prfaas.controller.memo import PlanMemo
from prfaas.model.planner import PlanError, PlanResult, plan
from prfaas.model.scenario import Scenario, case_study


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, scenario: Scenario) -> PlanResult:
        self.calls += 1
        return plan(scenario)


def _with(sc: Scenario, part: str, **update: object) -> Scenario:
    return sc.model_copy(update={part: getattr(sc, part).model_copy(update=update)})


def test_a_scenario_seen_before_is_not_planned_again() -> None:
    counting = Counting()
    memo = PlanMemo(planner=counting)
    sc = case_study()
    first, again = memo(sc), memo(sc.model_copy(deep=True))
    assert counting.calls == 1 and (memo.hits, memo.misses) == (1, 1)
    assert again == first
    full = plan(sc)
    assert (first.prfaas, first.homogeneous) == (full.prfaas, full.homogeneous)


def test_names_are_not_part_of_the_key() -> None:
    counting = Counting()
    memo = PlanMemo(planner=counting)
    sc = case_study()
    memo(sc)
    memo(_with(_with(sc, "pd_cluster", name="other"), "prefill_pool", name="other-pool"))
    assert counting.calls == 1


@pytest.mark.parametrize(
    ("part", "update"),
    [
        ("pd_cluster", {"instances": 10}),  # the spec
        ("prefill_pool", {"instances": 3}),  # the pool's size now
        ("link", {"capacity_gbps": 40.0}),  # a measured link
        ("workload", {"output_tokens": 2048}),  # the signals
    ],
)
def test_any_input_that_matters_is_planned_anew(part: str, update: dict[str, object]) -> None:
    counting = Counting()
    memo = PlanMemo(planner=counting)
    sc = case_study()
    before = memo(sc)
    changed = _with(sc, part, **update)
    after = memo(changed)
    assert counting.calls == 2
    assert after.prfaas == plan(changed).prfaas
    assert after != before


def test_bounded_least_recently_used_first_out() -> None:
    counting = Counting()
    memo = PlanMemo(size=2, planner=counting)
    sc = case_study()
    a, b, c = (_with(sc, "workload", output_tokens=n) for n in (512, 1024, 2048))
    memo(a), memo(b), memo(a), memo(c)  # b is the least recently used when c comes
    assert len(memo) == 2 and counting.calls == 3
    memo(a)
    assert counting.calls == 3
    memo(b)
    assert counting.calls == 4


def test_a_plan_error_is_remembered_and_raised_each_time() -> None:
    def failing(scenario: Scenario) -> PlanResult:
        failing.calls += 1  # type: ignore[attr-defined]
        raise PlanError("link: cannot carry even one request")

    failing.calls = 0  # type: ignore[attr-defined]
    memo = PlanMemo(planner=failing)
    for _ in range(3):
        with pytest.raises(PlanError, match="cannot carry"):
            memo(case_study())
    assert failing.calls == 1  # type: ignore[attr-defined]


def test_threads_asking_at_once_wait_for_one_search() -> None:
    started = threading.Event()

    def slow(scenario: Scenario) -> PlanResult:
        slow.calls += 1  # type: ignore[attr-defined]
        started.set()
        time.sleep(0.3)  # the others ask meanwhile
        return plan(scenario)

    slow.calls = 0  # type: ignore[attr-defined]
    memo = PlanMemo(planner=slow)
    sc = case_study()
    results = []
    first = threading.Thread(target=lambda: results.append(memo(sc)))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=lambda: results.append(memo(sc))) for _ in range(7)]
    for t in [*others]:
        t.start()
    for t in [first, *others]:
        t.join()
    assert slow.calls == 1  # type: ignore[attr-defined]
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert (memo.misses, memo.hits, len(memo)) == (1, 7, 1)


def test_an_unexpected_error_is_not_kept() -> None:
    calls = []

    def broken_once(scenario: Scenario) -> PlanResult:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return plan(scenario)

    memo = PlanMemo(planner=broken_once)
    with pytest.raises(RuntimeError):
        memo(case_study())
    assert memo(case_study()).prfaas == plan(case_study()).prfaas
    assert len(calls) == 2

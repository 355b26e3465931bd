"""The shared link: max-min fair shares with generation caps, and its egress accounting."""

from __future__ import annotations

import math

import pytest

from prfaas.sim.link import Flow, Link


def flow(gbit: float, cap: float = math.inf) -> Flow:
    return Flow(gbit, cap, 0, None, 0.0, 0.0)


def test_equal_shares_without_caps() -> None:
    link = Link(100.0, 10.0)
    a, b = flow(50.0), flow(100.0)
    link.flows += [a, b]
    assert link.reshare() == pytest.approx(1.0)  # a: 50 Gbit at 50 Gbps
    assert (a.rate, b.rate) == (50.0, 50.0)
    link.advance(1.0)
    assert [f is a for f in link.pop_done()] == [True]
    assert link.reshare() == pytest.approx(1.5)  # b alone: 50 Gbit left at 100 Gbps


def test_capped_flows_get_their_cap_and_the_rest_is_shared() -> None:
    link = Link(100.0, 10.0)
    slow, x, y = flow(10.0, cap=5.0), flow(100.0), flow(100.0)
    link.flows += [slow, x, y]
    link.reshare()
    assert slow.rate == 5.0 and x.rate == pytest.approx(47.5) and y.rate == pytest.approx(47.5)
    assert link.total_rate == pytest.approx(100.0)


def test_capacity_drop_slows_everything_and_buckets_add_up() -> None:
    link = Link(100.0, 1.0)
    f = flow(60.0)
    link.flows.append(f)
    link.reshare()
    link.advance(0.5)  # 50 Gbit at 100 Gbps
    link.capacity = 10.0
    assert link.reshare() == pytest.approx(0.5 + 1.0)  # 10 Gbit left at 10 Gbps
    link.advance(1.5)
    assert link.pop_done() == [f]
    assert link.delivered == pytest.approx(60.0)
    assert sum(link.per_bucket) == pytest.approx(60.0)
    assert link.per_bucket[0] == pytest.approx(55.0) and link.per_bucket[1] == pytest.approx(5.0)


def test_backlog_is_produced_minus_delivered() -> None:
    f = Flow(10.0, 1.0, 0, None, start=0.0, end=10.0)  # produced at 1 Gbps over 10 s
    f.remaining = 10.0 - 2.0  # 2 Gbit delivered by t=4: 4 produced → 2 in flight
    assert f.backlog(4.0) == pytest.approx(2.0)
    assert f.backlog(20.0) == pytest.approx(8.0)
    link = Link(0.0, 1.0)
    link.flows.append(flow(1.0))
    assert link.reshare() == math.inf  # an outage: nothing moves, no wake-up

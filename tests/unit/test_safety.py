"""The slow loop's safety rules, one by one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prfaas.slowloop.safety import Change, Group, floor_for, safe_changes

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
COOL = timedelta(minutes=5)


def by_group(changes: list[Change]) -> dict[str, Change]:
    return {c.group: c for c in changes}


def test_targets_are_clamped_to_bounds() -> None:
    c = by_group(safe_changes([Group("pool", 4, 1, 6)], {"pool": 12}, 100, COOL, NOW))["pool"]
    assert (c.desired, c.next) == (6, 6)
    c = by_group(safe_changes([Group("pool", 4, 2, 6)], {"pool": 0}, 100, COOL, NOW))["pool"]
    assert (c.desired, c.next) == (2, 2)


def test_max_step_limits_each_change() -> None:
    c = safe_changes([Group("decode", 1, 1, 7)], {"decode": 5}, 2, COOL, NOW)[0]
    assert c.next == 3 and c.desired == 5


def test_cooldown_holds_a_recently_changed_group() -> None:
    recent = Group("decode", 3, 1, 7, last_change=NOW - timedelta(minutes=1))
    c = safe_changes([recent], {"decode": 5}, 2, COOL, NOW)[0]
    assert not c.acts and c.reason == "cooldown"
    old = Group("decode", 3, 1, 7, last_change=NOW - timedelta(minutes=6))
    assert safe_changes([old], {"decode": 5}, 2, COOL, NOW)[0].next == 5


def test_never_shrinks_below_the_traffic_floor() -> None:
    c = safe_changes([Group("decode", 5, 1, 7, floor=4)], {"decode": 2}, 3, COOL, NOW)[0]
    assert c.next == 4 and "floor" in c.reason
    # already at or below the floor: hold, never cut further
    c = safe_changes([Group("decode", 3, 1, 7, floor=4)], {"decode": 2}, 3, COOL, NOW)[0]
    assert c.next == 3
    # growth is never blocked by the floor
    c = safe_changes([Group("decode", 3, 1, 7, floor=4)], {"decode": 6}, 3, COOL, NOW)[0]
    assert c.next == 6


def test_unreachable_group_holds_and_nothing_shrinks_elsewhere() -> None:
    groups = [
        Group("pool", 4, 1, 8, reachable=False),
        Group("prefill", 5, 1, 7),
        Group("decode", 3, 1, 7),
    ]
    targets = {"pool": 8, "prefill": 3, "decode": 5}
    c = by_group(safe_changes(groups, targets, 2, COOL, NOW, ("prefill", "decode", 8)))
    assert not c["pool"].acts and "unreachable" in c["pool"].reason
    assert not c["prefill"].acts and "unreachable" in c["prefill"].reason
    # decode may only grow into machines prefill gives up: none here
    assert not c["decode"].acts


def test_shared_machines_are_never_overcommitted() -> None:
    groups = [Group("prefill", 5, 1, 7), Group("decode", 3, 1, 7, floor=0)]
    changes = safe_changes(
        groups, {"prefill": 3, "decode": 5}, 2, COOL, NOW, ("prefill", "decode", 8)
    )
    c = by_group(changes)
    assert (c["prefill"].next, c["decode"].next) == (3, 5)
    assert changes[0].group == "decode"  # growth first
    # prefill in cooldown: decode must wait for the machines
    groups = [Group("prefill", 5, 1, 7, last_change=NOW), Group("decode", 3, 1, 7)]
    c = by_group(
        safe_changes(groups, {"prefill": 3, "decode": 5}, 2, COOL, NOW, ("prefill", "decode", 8))
    )
    assert (c["prefill"].next, c["decode"].next) == (5, 3)
    assert "free machines" in c["decode"].reason


def test_out_of_bounds_current_is_brought_back() -> None:
    c = safe_changes([Group("pool", 12, 1, 8)], {"pool": 12}, 1, COOL, NOW)[0]
    assert c.next == 8


def test_floor_for() -> None:
    assert floor_for(3.0, 0.78125) == 4
    assert floor_for(3.125, 0.78125) == 4
    assert floor_for(1.6, 0.4, share=0.5) == 2
    assert floor_for(0.0, 1.0) == 0

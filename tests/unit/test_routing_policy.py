"""The routing policy as the operator publishes it (``status.routingPolicy``)."""

from __future__ import annotations

from typing import Any

import pytest

from prfaas.routing import PolicyError, PoolRoute, RoutingPolicy

STATUS: dict[str, Any] = {
    "version": 7,
    "thresholdTokens": 19400,
    "prefillPools": [
        {"name": "h200", "endpoints": ["http://a:8000"], "linkBudgetGbps": 100.0},
    ],
    "prefillEndpoints": ["http://p0:8000"],
    "decodeEndpoints": ["http://d0:8000", "http://d1:8000"],
}


def test_parses_the_published_status() -> None:
    p = RoutingPolicy.from_status(STATUS)
    assert p.version == 7
    assert p.threshold_tokens == 19400
    assert p.pools == (PoolRoute("h200", ("http://a:8000",), 100.0),)
    assert p.decode_endpoints == ("http://d0:8000", "http://d1:8000")
    assert p.offloads


def test_the_operator_status_model_round_trips() -> None:
    from prfaas.api.pdcluster import PoolRoute as ApiPoolRoute
    from prfaas.api.pdcluster import RoutingPolicyStatus

    status = RoutingPolicyStatus(
        version=3,
        threshold_tokens=21000,
        prefill_pools=[ApiPoolRoute(name="p", endpoints=["http://x"], link_budget_gbps=10)],
    )
    p = RoutingPolicy.from_status(status.model_dump(by_alias=True, exclude_none=True, mode="json"))
    assert (p.version, p.threshold_tokens, p.pools[0].link_budget_gbps) == (3, 21000, 10.0)


def test_no_threshold_means_no_offload() -> None:
    p = RoutingPolicy.from_status({"version": 1})
    assert p.threshold_tokens is None and not p.offloads


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        ({"version": -1}, "version"),
        ({"thresholdTokens": "19K"}, "thresholdTokens"),
        ({"prefillPools": "h200"}, "prefillPools"),
        ({"prefillPools": [{"endpoints": []}]}, "prefillPools[0].name"),
        ({"prefillPools": [{"name": "a", "linkBudgetGbps": -1}]}, "linkBudgetGbps"),
        ({"prefillPools": [{"name": "a", "linkBudgetGbps": True}]}, "linkBudgetGbps"),
        ({"decodeEndpoints": [1]}, "decodeEndpoints"),
    ],
)
def test_bad_fields_are_named(edit: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyError, match=where.replace("[", r"\[").replace("]", r"\]")):
        RoutingPolicy.from_status({**STATUS, **edit})


def test_pools_may_carry_their_own_threshold() -> None:
    p = RoutingPolicy.from_status(
        {
            "version": 2,
            "thresholdTokens": 20000,
            "prefillPools": [
                {"name": "a", "linkBudgetGbps": 10, "thresholdTokens": 31000},
                {"name": "b", "linkBudgetGbps": 10},
            ],
        }
    )
    assert [p.threshold_for(i) for i in range(2)] == [31000, 20000]
    assert p.offloads
    only_own = RoutingPolicy.from_status({"prefillPools": [{"name": "a", "thresholdTokens": 5}]})
    assert only_own.threshold_tokens is None and only_own.offloads
    with pytest.raises(PolicyError, match=r"prefillPools\[0\].thresholdTokens"):
        RoutingPolicy.from_status({"prefillPools": [{"name": "a", "thresholdTokens": -1}]})


def test_standby_is_a_boolean() -> None:
    p = RoutingPolicy.from_status({"prefillPools": [{"name": "a", "standby": True}]})
    assert p.pools[0].standby and p.has_standby
    with pytest.raises(PolicyError, match="standby"):
        RoutingPolicy.from_status({"prefillPools": [{"name": "a", "standby": "yes"}]})

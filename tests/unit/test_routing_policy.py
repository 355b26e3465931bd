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


DISCOVERY = {
    **STATUS,
    "prefillEndpoints": [],
    "prefillDiscovery": {
        "namespace": "pd",
        "labelSelector": "kubernetes.io/service-name=h20-prefill",
        "port": "http",
    },
}


def test_a_local_group_found_from_endpointslices() -> None:
    from prfaas.routing.policy import EndpointSource

    p = RoutingPolicy.from_status(DISCOVERY)
    source = EndpointSource("pd", "kubernetes.io/service-name=h20-prefill", "http", "http")
    assert p.prefill_source == source and p.decode_source is None
    assert p.sources == (source,)
    assert p.prefill_endpoints == ()  # none until the router lists them
    found = p.with_found({source: ("http://10.0.0.1:8000", "http://10.0.0.2:8000")})
    assert found.prefill_endpoints == ("http://10.0.0.1:8000", "http://10.0.0.2:8000")
    assert found.decode_endpoints == p.decode_endpoints and found.version == p.version
    assert p.with_found({}) == p


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        ({"decodeDiscovery": "svc"}, "decodeDiscovery"),
        ({"decodeDiscovery": {"namespace": "pd"}}, "decodeDiscovery.labelSelector"),
        ({"decodeDiscovery": {"namespace": "", "labelSelector": "a=b"}}, "namespace"),
        ({"decodeDiscovery": {"namespace": "pd", "labelSelector": "a=b", "port": 80}}, "port"),
        ({"decodeDiscovery": {"namespace": "pd", "labelSelector": "a", "scheme": "ftp"}}, "scheme"),
    ],
)
def test_bad_discovery_fields_are_named(edit: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyError, match=where):
        RoutingPolicy.from_status({**DISCOVERY, **edit})


def test_the_plan_key_ignores_which_engines_serve() -> None:
    p = RoutingPolicy.from_status(STATUS)
    other = RoutingPolicy.from_status(
        {**STATUS, "version": 8, "prefillPools": [{**STATUS["prefillPools"][0], "endpoints": []}]}
    )
    assert p.plan_key() == other.plan_key()
    assert p.plan_key() != RoutingPolicy.from_status({**STATUS, "thresholdTokens": 1}).plan_key()

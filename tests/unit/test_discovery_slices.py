"""EndpointSlices as the EndpointSlice controller writes them → the engines to route to: ready
and not terminating only, on the right port, whatever the address type; nothing from what is
malformed."""

from __future__ import annotations

from typing import Any

import pytest

from prfaas.discovery.slices import endpoints_of, port_of, ready_urls


def eps(
    *endpoints: dict[str, Any],
    kind: str = "IPv4",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "addressType": kind,
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}] if ports is None else ports,
        "endpoints": list(endpoints),
    }


def ep(address: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


def test_ready_and_not_terminating_take_new_requests() -> None:
    s = eps(
        ep("10.0.0.1", ready=True, serving=True, terminating=False),
        ep("10.0.0.2", ready=False, serving=False),  # starting, or failing its probe
        ep("10.0.0.3", ready=False, serving=True, terminating=True),  # draining
        ep("10.0.0.4"),  # conditions unset: ready, not terminating (the API's reading)
        ep("10.0.0.5", ready=True, terminating=True),  # publishNotReadyAddresses: still leaving
    )
    assert ready_urls([s], None, "http") == ("http://10.0.0.1:8000", "http://10.0.0.4:8000")
    found = {e.url: (e.ready, e.terminating) for e in endpoints_of(s, None, "http")}
    assert found["http://10.0.0.3:8000"] == (False, True)


def test_an_endpoint_in_two_slices_is_ready_only_if_both_say_so() -> None:
    a = eps(ep("10.0.0.1", ready=True), ep("10.0.0.2", ready=True))
    b = eps(ep("10.0.0.1", ready=False, terminating=True))
    assert ready_urls([a, b], None, "http") == ("http://10.0.0.2:8000",)


@pytest.mark.parametrize(
    ("ports", "name", "port"),
    [
        ([{"name": "", "port": 8000}], None, 8000),  # the only port, unnamed
        ([{"name": "metrics", "port": 9090}, {"name": "http", "port": 8000}], None, 8000),
        ([{"name": "metrics", "port": 9090}, {"name": "api", "port": 8001}], None, None),
        ([{"name": "metrics", "port": 9090}, {"name": "api", "port": 8001}], "api", 8001),
        ([{"name": "http", "port": 8000, "protocol": "UDP"}], None, None),
        ([{"name": "http"}], None, None),  # no port number: all ports, not one engine port
        ([{"name": "http", "port": 70000}], None, None),
        ("nonsense", None, None),
    ],
)
def test_the_port(ports: Any, name: str | None, port: int | None) -> None:
    assert port_of(ports, name) == port


def test_address_types_and_malformed_addresses() -> None:
    v6 = eps(ep("fd00::0001", ready=True), kind="IPv6")
    fqdn = eps(ep("prefill-0.engines.example", ready=True), kind="FQDN")
    assert ready_urls([v6], None, "https") == ("https://[fd00::1]:8000",)
    assert ready_urls([fqdn], None, "http") == ("http://prefill-0.engines.example:8000",)
    bad = [
        eps(ep("fd00::1"), kind="IPv4"),  # not what the slice says
        eps(ep("10.0.0.1"), kind="IPv6"),
        eps(ep("10.0.0.1/evil"), kind="IPv4"),
        eps(ep("a b.example"), kind="FQDN"),
        eps(ep("x@evil.example"), kind="FQDN"),
        eps({"addresses": []}),
        eps({"conditions": {"ready": True}}),
        {"addressType": "IPv4", "endpoints": "nonsense", "ports": [{"port": 1}]},
        eps(ep("10.0.0.1"), ports=[]),
    ]
    assert ready_urls(bad, None, "http") == ()

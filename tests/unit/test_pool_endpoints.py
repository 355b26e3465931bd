"""The operator's EndpointSlice watches of PrefillPools: one per selection, shared by the
PDClusters that use the pool, stopped when none does. (The watches here point at a port where
nothing listens: this is about their bookkeeping; tests/integration/test_discovery.py runs them
against real API servers.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from prfaas.api.common import Endpoints
from prfaas.controller import endpoints as module
from prfaas.controller.endpoints import PoolEndpoints
from prfaas.controller.kube import Cluster


@pytest.fixture
def found(monkeypatch: pytest.MonkeyPatch) -> Iterator[PoolEndpoints]:
    monkeypatch.setattr(module, "FIRST_LIST_S", 0.0)
    registry = PoolEndpoints()
    yield registry
    registry.stop()


def nowhere() -> Cluster:
    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:1"
    return Cluster(client.ApiClient(cfg), name="nowhere")


def test_watches_are_shared_and_stopped_with_their_last_user(found: PoolEndpoints) -> None:
    member = nowhere()
    svc = Endpoints(service="h200-prefill")
    assert found.ready(("ns", "a"), member, "ns", svc) is None  # not listed (nothing answers)
    found.ready(("ns", "b"), member, "ns", svc)
    shared = found.view(("ns", "a"))
    assert shared is not None and found.view(("ns", "b")) is shared
    # a moves to another selection: b keeps the shared watch
    found.ready(("ns", "a"), member, "ns", Endpoints(service="other"))
    assert found.view(("ns", "b")) is shared and not shared.stopped
    other = found.view(("ns", "a"))
    assert other is not None and other is not shared
    found.release(("ns", "a"))
    assert other.stopped and found.view(("ns", "a")) is None
    found.release(("ns", "b"))
    assert shared.stopped


def test_another_cluster_is_another_watch(found: PoolEndpoints) -> None:
    svc = Endpoints(service="h200-prefill")
    found.ready(("ns", "a"), nowhere(), "ns", svc)
    first = found.view(("ns", "a"))
    found.ready(("ns", "a"), nowhere(), "ns", svc)  # the member's Secret was rotated
    assert first is not None and first.stopped and found.view(("ns", "a")) is not first

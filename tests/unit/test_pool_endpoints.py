"""The operator's EndpointSlice watches of PrefillPools: one per selection, shared by the
PDClusters that use the pool, stopped when none does. (The watches here point at a port where
nothing listens: this is about their bookkeeping; tests/integration/test_discovery.py runs them
against real API servers.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


def test_a_pool_in_a_namespace_the_cr_may_not_name_has_no_engines(found: PoolEndpoints) -> None:
    """The operator lists nothing there (as it would not scale there): no engines, no watch."""
    from pathlib import Path

    import yaml

    from prfaas.api.pdcluster import PDClusterSpec
    from prfaas.api.prefillpool import PrefillPoolSpec
    from prfaas.controller.observe import _with_engines
    from prfaas.controller.trust import Trust
    from prfaas.slowloop.observation import PoolObservation

    samples = Path(__file__).resolve().parents[2] / "manifests" / "samples"
    pd = PDClusterSpec.model_validate(
        yaml.safe_load((samples / "pdcluster-h20.yaml").read_text())["spec"]
    )
    raw = yaml.safe_load((samples / "prefillpool-h200.yaml").read_text())["spec"]
    raw["scaleTargetRef"]["namespace"] = "someone-else"
    pool = PoolObservation(pd.prefill_pools[0], PrefillPoolSpec.model_validate(raw))
    members: Any = None  # never asked: the namespace is refused first
    seen = _with_engines(found, members, Trust(), ("pd", "h20-pd"), "pd", pool)
    assert seen is not None and seen.endpoints == ()
    assert found.view(("pd", "h20-pd")) is None

"""Fixtures for integration tests that need real processes.

``control_plane``: one etcd + kube-apiserver (RBAC on) for the whole session; its admin kubeconfig
is ``control_plane.kubeconfig``. ``control_plane_factory()``: more of them (another datacenter),
stopped at the end of the session. Missing binaries fail the tests (``make k8s-bin``); they never
skip, so a suite cannot pass without exercising the API server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from existing_cluster import ENV, ExistingCluster, configured

from prfaas_dev.cluster import BinariesMissingError, ControlPlane, DevClusterError

ControlPlaneFactory = Callable[[], ControlPlane]


@pytest.fixture(scope="session")
def control_plane_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlaneFactory]:
    planes: list[ControlPlane] = []
    existing = configured()

    def make() -> ControlPlane:
        if existing:  # `make e2e-kind`: clusters that already exist, in order
            index = len(planes)
            if index >= len(existing):
                pytest.fail(f"{ENV} names {len(existing)} cluster(s); the test needs more")
            found: Any = ExistingCluster(existing[index], index)
            planes.append(found)
            return cast(ControlPlane, found)
        # State (logs included) under pytest's basetemp, so a failed run can be inspected.
        plane = ControlPlane(state_dir=tmp_path_factory.mktemp("control-plane"))
        failure = ""
        try:
            plane.start()
        except BinariesMissingError as e:
            failure = f"{e}\n(fix: `make k8s-bin`)"
        except DevClusterError as e:
            failure = f"control plane did not start: {e}"
        if failure:  # outside `except`: no chained traceback around the message
            pytest.fail(failure, pytrace=False)
        planes.append(plane)
        return plane

    yield make
    if existing:
        return  # not ours to stop
    for plane in planes:
        plane.stop()


@pytest.fixture(scope="session")
def control_plane(control_plane_factory: ControlPlaneFactory) -> ControlPlane:
    return control_plane_factory()

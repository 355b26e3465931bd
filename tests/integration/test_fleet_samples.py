"""The fleet samples (two PrefillPools, three PDClusters listing several pools) are valid
against the CRDs on a real API server, and what it stores plans as the fleet it was read from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_helpers import ROOT, get_json, kubectl

from prfaas.api import PDCluster, PrefillPool
from prfaas.api.fleet import fleet_from_documents
from prfaas.commands.fleet_input import load_input
from prfaas.model.fleet_planner import plan_fleet

pytestmark = pytest.mark.integration
NS = "prfaas-fleet"
SAMPLES = ROOT / "manifests/samples/fleet"
PDC, POOL = PDCluster.resource, PrefillPool.resource


@pytest.fixture(scope="module")
def admin(control_plane: Any) -> Path:
    kc = Path(control_plane.kubeconfig)
    kubectl(kc, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(kc, "wait", "--for=condition=Established", "--timeout=60s",
            f"crd/{PDC.name}", f"crd/{POOL.name}")  # fmt: skip
    return kc


def test_the_fleet_samples_apply_and_plan_as_stored(admin: Path) -> None:
    out = kubectl(admin, "apply", "--server-side", "--field-manager=tests", "-k", str(SAMPLES))
    for name in ("west", "central", "south"):
        assert f"{PDC.singular}.{PDC.group}/{name} serverside-applied" in out.stdout
    for name in ("h200-east", "h200-north"):
        assert f"{POOL.singular}.{POOL.group}/{name} serverside-applied" in out.stdout
    pools = get_json(admin, POOL.plural, "-n", NS)["items"]
    clusters = get_json(admin, PDC.plural, "-n", NS)["items"]
    west = next(c for c in clusters if c["metadata"]["name"] == "west")
    assert [p["name"] for p in west["spec"]["prefillPools"]] == ["h200-east", "h200-north"]
    # the objects as the API server stores them (defaults applied) are the same fleet
    stored = fleet_from_documents([("api", o) for o in pools + clusters])
    from_files = load_input(str(SAMPLES))
    a, b = plan_fleet(stored).joint, plan_fleet(from_files).joint  # type: ignore[arg-type]
    assert a.satisfaction == pytest.approx(b.satisfaction, rel=1e-9)
    assert {c.name: c.threshold_tokens for c in a.clusters} == {
        c.name: c.threshold_tokens for c in b.clusters
    }


def test_the_api_server_refuses_a_pool_listed_twice(admin: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load((SAMPLES / "pdcluster-central.yaml").read_text())
    doc["metadata"]["name"] = "twice"
    doc["spec"]["prefillPools"].append(doc["spec"]["prefillPools"][0])
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = kubectl(admin, "apply", "--server-side", "-f", str(path), check=False)
    assert result.returncode != 0
    assert 'duplicate entries for key [name="h200-east"]' in result.stderr

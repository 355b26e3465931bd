"""The fleet in the discrete-event model: conservation, the planner's limits, faults, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from prfaas.cli import main
from prfaas.commands.fleet_input import load_input
from prfaas.model.fleet import Fleet
from prfaas.model.fleet_planner import FleetResult, plan_fleet
from prfaas.sim.fleet_engine import Fault
from prfaas.sim.fleet_run import FleetSimOptions, simulate_fleet, sustainable

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests/samples/fleet"


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    f = load_input(str(SAMPLE))
    assert isinstance(f, Fleet)
    return f


@pytest.fixture(scope="module")
def result(fleet: Fleet) -> FleetResult:
    return plan_fleet(fleet)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_request_is_served_and_the_plan_is_followed(
    fleet: Fleet, result: FleetResult
) -> None:
    options = FleetSimOptions(scale=0.8, requests=4000, plans=("joint",))
    run_ = simulate_fleet(fleet, options, result).runs["joint"]
    capacity = {
        f"{c.name}/{link.pool}": link.capacity_gbps for c in fleet.clusters for link in c.links
    }
    for c in run_.clusters:
        planned = result.joint.cluster(c.name)
        assert c.dropped == 0
        assert c.completed == pytest.approx(4000 * planned.demand_rps / 7.4, abs=2)
        # the routers offload what the plan says (the fast loop moves t a little)
        assert c.offload_fraction == pytest.approx(planned.offload_fraction, abs=0.08)
        assert c.ttft_p90_s is not None and c.ttft_p90_s < options.slo_ttft_s
    for link, gbps in run_.link_gbps.items():
        assert gbps <= capacity[link]
    # only the routes the plan uses carry KV: west's link to h200-north only stands by
    assert run_.link_gbps["west/h200-north"] == 0.0


def test_the_joint_plan_sustains_what_the_planner_says_and_more_than_independent(
    fleet: Fleet, result: FleetResult
) -> None:
    options = FleetSimOptions(requests=3000)
    joint = sustainable(fleet, options, "joint", result, iterations=5)
    independent = sustainable(fleet, options, "independent", result, iterations=5)
    assert joint.planned_scale == pytest.approx(result.joint.satisfaction)
    # queues at a P90 SLO sit a little under the fluid limit, never above it
    assert 0.88 * joint.planned_scale <= joint.scale <= 1.02 * joint.planned_scale
    assert joint.scale > independent.scale * 1.15


def test_a_pool_down_from_the_start_is_never_used(fleet: Fleet, result: FleetResult) -> None:
    options = FleetSimOptions(
        scale=0.5, requests=2000, plans=("joint",), faults=(Fault("pool", "h200-north", 0.0),)
    )
    run_ = simulate_fleet(fleet, options, result).runs["joint"]
    assert all(c.dropped == 0 for c in run_.clusters)
    assert sum(c.completed for c in run_.clusters) == pytest.approx(2000, abs=3)
    assert run_.link_gbps.get("south/h200-north", 0.0) == 0.0
    assert run_.link_gbps.get("central/h200-north", 0.0) == 0.0
    south = next(c for c in run_.clusters if c.name == "south")
    assert south.offload_fraction == 0.0  # its only pool is down: fails open to local


def test_a_pool_that_fails_mid_run_has_its_work_rerouted(fleet: Fleet, result: FleetResult) -> None:
    fault = Fault("pool", "h200-east", 100.0, 200.0)
    options = FleetSimOptions(scale=0.6, requests=3000, plans=("joint",), faults=(fault,))
    run_ = simulate_fleet(fleet, options, result).runs["joint"]
    assert run_.rerouted > 0
    assert all(c.dropped == 0 for c in run_.clusters)
    assert sum(c.completed for c in run_.clusters) == pytest.approx(3000, abs=3)


def test_a_link_cut_stalls_only_its_transfers(fleet: Fleet, result: FleetResult) -> None:
    fault = Fault("link", "south/h200-north", 0.0)
    options = FleetSimOptions(scale=0.5, requests=2000, plans=("joint",), faults=(fault,))
    run_ = simulate_fleet(fleet, options, result).runs["joint"]
    assert run_.link_gbps.get("south/h200-north", 0.0) == 0.0
    assert all(c.dropped == 0 for c in run_.clusters)
    south = next(c for c in run_.clusters if c.name == "south")
    assert south.offload_fraction < 0.01  # its only link is down: the router keeps it local
    assert sum(c.completed for c in run_.clusters) == pytest.approx(2000, abs=3)


def test_a_cluster_fails_over_to_a_standby_pool(fleet: Fleet, result: FleetResult) -> None:
    # west's plan uses h200-east only; with that link cut, its router takes h200-north, which
    # it reaches but the plan left to the others
    fault = Fault("link", "west/h200-east", 0.0)
    options = FleetSimOptions(scale=0.5, requests=2000, plans=("joint",), faults=(fault,))
    run_ = simulate_fleet(fleet, options, result).runs["joint"]
    west = next(c for c in run_.clusters if c.name == "west")
    assert run_.link_gbps["west/h200-north"] > 0.5
    assert west.offload_fraction > 0.3
    assert all(c.dropped == 0 for c in run_.clusters)


# -- the command line ------------------------------------------------------------------------


def test_plan_and_simulate_a_fleet_directory_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["plan", "-f", str(SAMPLE), "-o", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert set(doc["plans"]) == {"joint", "independent", "homogeneous"}
    joint = doc["plans"]["joint"]
    assert set(joint["clusters"]) == {"west", "central", "south"}
    assert set(joint["pools"]) == {"h200-east", "h200-north"}
    for key in ("satisfaction", "served_rps", "throughput_rps", "demand_rps", "cost_per_hour"):
        assert key in joint
    west = joint["clusters"]["west"]
    for key in ("threshold_tokens", "n_prefill", "n_decode", "offload_fraction", "pools", "limit"):
        assert key in west
    assert doc["gain"]["satisfaction_vs_independent"] > 1.2
    code, out, _ = run(
        ["simulate", "-f", str(SAMPLE), "--requests", "1500", "--policies", "joint", "-o", "json"],
        capsys,
    )
    assert code == 0
    doc = json.loads(out)
    assert set(doc["plans"]) == {"joint"}
    assert doc["plans"]["joint"]["clusters"]["south"]["dropped"] == 0


def test_plan_a_fleet_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["plan", "-f", str(ROOT / "bench/fleets/two-datacenters.yaml")], capsys)
    assert code == 0
    for word in ("Joint", "Independent", "Homogeneous", "h200-north", "south", "scale"):
        assert word in out


def _fleet_file(tmp_path: Path, edit: Any) -> str:
    data = yaml.safe_load((ROOT / "bench/fleets/two-datacenters.yaml").read_text())
    edit(data)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("args", "edit", "needle"),
    [
        (["plan"], lambda d: d["clusters"][0]["links"][0].update(pool="x"), "unknown pool 'x'"),
        (["plan"], lambda d: d["clusters"][1]["workload"].pop("arrivalRateRps"), "arrivalRate"),
        (["plan", "--plot", "x.png"], lambda d: None, "--plot"),
        (["simulate", "--rate", "2"], lambda d: None, "--rate: not for a fleet"),
        (["simulate", "--fail", "pool:h200-west@5"], lambda d: None, "unknown pool"),
        (["simulate", "--fail", "link:west@5"], lambda d: None, "unknown link"),
        (["simulate", "--policies", "prfaas"], lambda d: None, "unknown fleet plan"),
        (["simulate", "--scale", "-1"], lambda d: None, "scale must be > 0"),
    ],
    ids=["unknown-pool", "no-demand", "plot", "rate", "fail-pool", "fail-link", "plan", "scale"],
)
def test_bad_fleet_input_exits_2_with_one_line(
    args: list[str], edit: Any, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([args[0], "-f", _fleet_file(tmp_path, edit), *args[1:]], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_resources_in_two_namespaces_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for f in SAMPLE.glob("*.yaml"):
        text = f.read_text()
        if f.name == "pdcluster-west.yaml":
            text = text.replace("namespace: prfaas-fleet", "namespace: elsewhere")
        (tmp_path / f.name).write_text(text)
    code, _, err = run(["plan", "-f", str(tmp_path)], capsys)
    assert code == 2 and "several namespaces" in err


def test_transfers_on_a_link_that_fails_mid_run_are_prefilled_again(
    fleet: Fleet, result: FleetResult
) -> None:
    # the link never comes back: without re-prefilling, its transfers (and the pool instances
    # holding their KV) would wait forever and the run would never end
    fault = Fault("link", "west/h200-east", 60.0)
    options = FleetSimOptions(scale=0.6, requests=2000, plans=("joint",), faults=(fault,))
    run_ = simulate_fleet(fleet, options, result).runs["joint"]
    assert run_.rerouted > 0
    assert sum(c.completed for c in run_.clusters) == pytest.approx(2000, abs=3)
    assert all(c.dropped == 0 for c in run_.clusters)


def test_a_fault_on_a_link_a_plan_does_not_use_changes_nothing(
    fleet: Fleet, result: FleetResult
) -> None:
    # the joint plan keeps west's link to h200-north on standby; the homogeneous one uses none
    fault = Fault("link", "west/h200-north", 10.0, 20.0)
    options = FleetSimOptions(scale=0.5, requests=1000, plans=("joint", "homogeneous"))
    plain = simulate_fleet(fleet, options, result).runs
    cut = simulate_fleet(fleet, replace(options, faults=(fault,)), result).runs
    for name in ("joint", "homogeneous"):
        assert [c.ttft_p90_s for c in cut[name].clusters] == [
            c.ttft_p90_s for c in plain[name].clusters
        ]

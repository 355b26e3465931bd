"""``prfaas plan``: solve the throughput model for a scenario and compare with the baselines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from prfaas.commands.errors import CommandError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="solve the throughput model: best threshold t and N_p/N_d vs the baselines",
        description=(
            "Plan a PrfaaS deployment with the paper's analytical model (Eqs. 3-8): exhaustive "
            "grid over the threshold t and the local split N_p/N_d (and N_prfaas when "
            "planner.poolInstances is set), against homogeneous PD and naive heterogeneous "
            "baselines. Without -f it plans the paper's case study (4×8 H200 + 8×8 H20, "
            "100 Gbps). A fleet (several PrefillPools and PD clusters: a fleet file with 'pools' "
            "and 'clusters', or PrefillPool/PDCluster resources, e.g. -f "
            "manifests/samples/fleet/) is planned jointly, next to each cluster planned alone on "
            "an even split of the pools (independent) and the homogeneous baseline."
        ),
        epilog="Exit status: 0 planned, 2 bad input (the message names the field).",
    )
    p.add_argument(
        "-f",
        "--file",
        metavar="FILE|DIR",
        help="scenario or fleet YAML/JSON, or a directory of CRs (default: the case study)",
    )
    p.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw the paper's Figure 5 panels")
    p.add_argument(
        "--show-input",
        action="store_true",
        help="print the embedded case-study scenario (a template for -f) and exit",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prfaas.commands.fleet_input import load_input
    from prfaas.model.fleet import Fleet
    from prfaas.model.planner import PlanError, plan
    from prfaas.model.scenario import ScenarioError, case_study, case_study_text
    from prfaas.report.plan import plan_json, print_plan
    from prfaas.report.plotting import PlotError

    if args.show_input:
        sys.stdout.write(case_study_text())
        return 0
    try:
        scenario = load_input(args.file) if args.file else case_study()
        if isinstance(scenario, Fleet):
            return _fleet(scenario, args)
        result = plan(scenario)
    except (ScenarioError, PlanError) as exc:
        raise CommandError(str(exc)) from None
    if args.output == "json":
        print(json.dumps(plan_json(scenario, result), indent=2))
    else:
        print_plan(scenario, result, Console())
    if args.plot:
        from prfaas.report.plan_plot import plot_plan

        try:
            plot_plan(result, Path(args.plot))
        except PlotError as exc:
            raise CommandError(str(exc)) from None
        if args.output != "json":
            Console(stderr=True).print(f"wrote {args.plot}")
    return 0


def _fleet(fleet: Any, args: argparse.Namespace) -> int:
    from prfaas.model.fleet_planner import plan_fleet
    from prfaas.report.fleet import fleet_json, print_fleet

    if args.plot:
        raise CommandError("--plot draws a single-cluster scenario; a fleet has no plot yet")
    result = plan_fleet(fleet)
    if args.output == "json":
        print(json.dumps(fleet_json(fleet, result), indent=2))
    else:
        print_fleet(fleet, result, Console())
    return 0

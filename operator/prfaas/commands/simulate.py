"""``prfaas simulate``: discrete-event simulation of the planned deployment and its baselines."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from rich.console import Console

from prfaas.commands.errors import CommandError

POLICY_NAMES = ("homogeneous", "naive", "prfaas_static", "prfaas")
ARRIVALS = ("poisson", "bursty", "trace")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate TTFT, throughput and egress of PrfaaS vs the baselines",
        description=(
            "Discrete-event simulation of the planned PrfaaS deployment against homogeneous PD "
            "and naive heterogeneous baselines, with the router's own per-request policy: "
            "queues at PrefillPool, PD-P and PD-D, KV transfers sharing the link, prefix "
            "caches, bursts and link-capacity changes. Without arguments: the paper's case "
            "study, 20,000 Poisson requests at 0.9× the homogeneous baseline's Λ_max."
        ),
        epilog=(
            "Examples: prfaas simulate --link-schedule 600:10,1800:100 --rate 2.9 ; "
            "prfaas simulate --arrivals bursty --burst 2:60:120 ; "
            "prfaas simulate --trace trace.jsonl ; prfaas simulate --max-rate ; "
            "prfaas simulate -f manifests/samples/fleet/ --fail pool:h200-north@600-1200. "
            "A fleet runs its joint plan, the independent plans and the homogeneous baseline "
            "(--policies joint,independent,homogeneous) at --scale × every cluster's demand. "
            "Exit status: 0 done, 2 bad input (one line naming the problem)."
        ),
    )
    p.add_argument(
        "-f",
        "--file",
        metavar="FILE|DIR",
        help=(
            "scenario or fleet YAML/JSON, or a directory of PrefillPool/PDCluster resources "
            "(default: the case study)"
        ),
    )
    p.add_argument(
        "--policies",
        metavar="LIST",
        default=",".join(POLICY_NAMES),
        help=f"comma-separated, from: {', '.join(POLICY_NAMES)} (default: all)",
    )
    p.add_argument("--rate", metavar="RPS", help="mean arrival rate (default: 0.9× homogeneous)")
    p.add_argument("--requests", metavar="N", help="number of requests (default 20000)")
    p.add_argument("--duration", metavar="S", help="arrivals during this many seconds instead")
    p.add_argument(
        "--drain", metavar="S", help="stop S seconds after the last arrival (default: run to empty)"
    )
    p.add_argument("--arrivals", metavar="KIND", default="poisson", help="poisson|bursty|trace")
    p.add_argument(
        "--burst",
        metavar="FACTOR:ON:OFF",
        default="1.5:60:120",
        help="bursty: FACTOR × the mean rate during on-periods of mean ON s, off-periods OFF s",
    )
    p.add_argument("--trace", metavar="FILE.jsonl", help="replay a Mooncake trace")
    p.add_argument(
        "--link-schedule",
        metavar="T:GBPS,...",
        default="",
        help="link capacity changes, e.g. 600:10,1800:100 (0 = outage)",
    )
    p.add_argument("--hit-rate-pd", metavar="P", default="0", help="PD cluster prefix hit rate")
    p.add_argument("--hit-rate-pool", metavar="P", default="0", help="pool prefix hit rate")
    p.add_argument(
        "--cached-fraction", metavar="F", default="0.5", help="prompt share cached on a hit"
    )
    p.add_argument(
        "--snapshot-interval",
        metavar="BLOCKS",
        default="0",
        help="hybrid-model state snapshots every BLOCKS blocks (0: only where prefills end)",
    )
    p.add_argument("--slo-ttft", metavar="S", default="20", help="P90 TTFT SLO (default 20 s)")
    p.add_argument("--slo-tpot", metavar="S", help="TPOT SLO (default: the decode step)")
    p.add_argument("--seed", metavar="N", default="0")
    p.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )
    p.add_argument("--plot", metavar="FILE.png", help="TTFT CDFs, egress and threshold over time")
    p.add_argument(
        "--max-rate",
        action="store_true",
        help=(
            "instead: bisect the highest rate per policy whose P90 TTFT meets --slo-ttft "
            "(prfaas_static is skipped: on a steady link it matches prfaas)"
        ),
    )
    p.add_argument("--write-trace", metavar="FILE.jsonl", help="also write the requests (Mooncake)")
    p.add_argument(
        "--scale", metavar="F", help="fleet: every cluster at F × its demand (default 1)"
    )
    p.add_argument(
        "--fail",
        metavar="SPEC",
        action="append",
        default=[],
        help="fleet: pool:NAME@START[-END] or link:CLUSTER/POOL@START[-END] (seconds; repeatable)",
    )
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", help="progress bar on stderr")
    progress.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _number(raw: str | None, flag: str, kind: Callable[[str], Any] = float) -> Any:
    if raw is None:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise CommandError(f"{flag}: not a number: {raw!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandError(f"{flag}: must be finite, got {raw!r}")
    return value


def _options(args: argparse.Namespace) -> Any:
    from prfaas.sim.options import (
        SLO,
        ArrivalKind,
        Bursts,
        LinkSchedule,
        PolicyName,
        PrefixSettings,
        SimOptions,
    )

    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    for name in policies:
        if name not in POLICY_NAMES:
            raise CommandError(
                f"--policies: unknown policy {name!r} (choose from {', '.join(POLICY_NAMES)})"
            )
    arrivals = "trace" if args.trace and args.arrivals == "poisson" else args.arrivals
    if args.trace and arrivals != "trace":
        raise CommandError(f"--trace replays the trace's own arrivals; drop --arrivals {arrivals}")
    if arrivals not in ARRIVALS:
        raise CommandError(f"--arrivals: unknown {arrivals!r} (choose from {', '.join(ARRIVALS)})")
    burst = args.burst.split(":")
    if len(burst) != 3:
        raise CommandError(f"--burst: expected FACTOR:ON:OFF, got {args.burst!r}")
    factor, on, off = (_number(x, "--burst") for x in burst)
    rate = _number(args.rate, "--rate")
    if rate is not None and rate <= 0:
        raise CommandError(f"--rate: must be > 0 req/s, got {args.rate}")
    requests = _number(args.requests, "--requests", int)
    if requests is not None and requests < 1:
        raise CommandError(f"--requests: must be >= 1, got {args.requests}")
    return SimOptions(
        rate_rps=rate,
        requests=requests,
        duration_s=_number(args.duration, "--duration"),
        drain_s=_number(args.drain, "--drain"),
        arrivals=cast("ArrivalKind", arrivals),
        bursts=Bursts(factor, on, off),
        trace=Path(args.trace) if args.trace else None,
        link=LinkSchedule.parse(args.link_schedule),
        prefix=PrefixSettings(
            hit_rate_pd=_number(args.hit_rate_pd, "--hit-rate-pd"),
            hit_rate_pool=_number(args.hit_rate_pool, "--hit-rate-pool"),
            cached_fraction=_number(args.cached_fraction, "--cached-fraction"),
            snapshot_interval_blocks=_number(args.snapshot_interval, "--snapshot-interval", int),
        ),
        slo=SLO(_number(args.slo_ttft, "--slo-ttft"), _number(args.slo_tpot, "--slo-tpot")),
        seed=_number(args.seed, "--seed", int),
        policies=cast("tuple[PolicyName, ...]", policies),
    )


@contextmanager
def _progress(enabled: bool, forced: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich bar on stderr: on a terminal, or anywhere when asked (``--progress``)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True, force_terminal=forced or None),
        transient=True,
    ) as bar:

        def update(policy: str, done: int, total: int) -> None:
            if policy not in tasks:
                tasks[policy] = bar.add_task(policy, total=total)
            bar.update(tasks[policy], completed=done)

        yield update


def run(args: argparse.Namespace) -> int:
    from prfaas.commands.fleet_input import load_input
    from prfaas.model.fleet import Fleet
    from prfaas.model.planner import PlanError, plan
    from prfaas.model.scenario import ScenarioError, case_study
    from prfaas.report.plotting import PlotError
    from prfaas.report.sim import print_sim, sim_json
    from prfaas.sim.options import SimError
    from prfaas.sim.run import prepare, simulate
    from prfaas.sim.trace import write_trace

    try:
        scenario = load_input(args.file) if args.file else case_study()
        if isinstance(scenario, Fleet):
            return _fleet(scenario, args)
        if args.scale is not None or args.fail:
            raise CommandError("--scale and --fail are for fleets (-f FLEET or a CR directory)")
        options = _options(args)
    except (ScenarioError, SimError, PlanError) as exc:
        raise CommandError(str(exc)) from None
    show = args.progress or (not args.no_progress and sys.stderr.isatty())
    err = Console(stderr=True)
    try:
        if args.write_trace:
            _, _, requests = prepare(scenario, options)
            try:
                with Path(args.write_trace).open("w", encoding="utf-8") as fh:
                    write_trace(requests.rows(), fh)
            except OSError as exc:
                raise CommandError(f"--write-trace: cannot write: {exc.strerror}") from None
            if args.output != "json":
                err.print(f"wrote {len(requests):,} requests to {args.write_trace}")
        if args.max_rate:
            return _max_rate(scenario, options, args, plan(scenario), show)
        with _progress(show, args.progress) as progress:
            report = simulate(scenario, options, progress)
    except (ScenarioError, SimError, PlanError) as exc:
        raise CommandError(str(exc)) from None
    if args.output == "json":
        print(json.dumps(sim_json(report), indent=2))
    else:
        print_sim(report, Console())
    if args.plot:
        from prfaas.report.sim_plot import plot_sim

        try:
            plot_sim(report, Path(args.plot))
        except PlotError as exc:
            raise CommandError(str(exc)) from None
        if args.output != "json":
            err.print(f"wrote {args.plot}")
    return 0


def _max_rate(
    scenario: Any, options: Any, args: argparse.Namespace, result: Any, show: bool
) -> int:
    from dataclasses import replace

    from prfaas.report.sim import print_sustainable, sustainable_json
    from prfaas.sim.capacity import sustainable_rate

    if options.trace is not None:
        raise CommandError("--max-rate: uses generated Poisson/bursty arrivals; drop --trace")
    if options.requests is None and options.duration_s is None:
        options = replace(options, requests=10_000)
    names = [p for p in options.policies if p != "prfaas_static"] or list(options.policies)
    found = []
    with _progress(show, args.progress) as progress:
        for i, name in enumerate(names):
            found.append(sustainable_rate(scenario, options, name, result=result))
            if progress is not None:
                progress("max rate", i + 1, len(names))
    if args.output == "json":
        print(json.dumps(sustainable_json(found, options.slo.ttft_s), indent=2))
    else:
        print_sustainable(found, options.slo.ttft_s, Console())
    return 0


# single-cluster options a fleet run does not take, with their defaults
_NOT_FOR_FLEETS = {
    "rate": None,
    "duration": None,
    "drain": None,
    "arrivals": "poisson",
    "trace": None,
    "link_schedule": "",
    "hit_rate_pd": "0",
    "hit_rate_pool": "0",
    "plot": None,
    "write_trace": None,
}


def _fleet_options(args: argparse.Namespace) -> Any:
    from prfaas.sim.fleet_run import FLEET_PLANS, FleetSimOptions, parse_fault

    for name, default in _NOT_FOR_FLEETS.items():
        if getattr(args, name) != default:
            flag = "--" + name.replace("_", "-")
            raise CommandError(f"{flag}: not for a fleet (use --scale, --requests, --fail)")
    names = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    if args.policies == ",".join(POLICY_NAMES):
        names = FLEET_PLANS
    for name in names:
        if name not in FLEET_PLANS:
            raise CommandError(
                f"--policies: unknown fleet plan {name!r} (choose from {', '.join(FLEET_PLANS)})"
            )
    scale = _number(args.scale, "--scale")
    requests = _number(args.requests, "--requests", int)
    return FleetSimOptions(
        scale=1.0 if scale is None else scale,
        requests=20_000 if requests is None else requests,
        seed=_number(args.seed, "--seed", int),
        slo_ttft_s=_number(args.slo_ttft, "--slo-ttft"),
        plans=cast("Any", names),
        faults=tuple(parse_fault(f) for f in args.fail),
    )


def _fleet(fleet: Any, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from prfaas.model.fleet_planner import plan_fleet
    from prfaas.report.fleet_sim import (
        fleet_sim_json,
        fleet_sustainable_json,
        print_fleet_sim,
        print_fleet_sustainable,
    )
    from prfaas.sim.fleet_run import simulate_fleet, sustainable

    options = _fleet_options(args)
    result = plan_fleet(fleet)
    if args.max_rate:
        if options.requests == 20_000 and args.requests is None:
            options = replace(options, requests=6_000)
        found = [sustainable(fleet, options, name, result) for name in options.plans]
        if args.output == "json":
            print(json.dumps(fleet_sustainable_json(found, options.slo_ttft_s), indent=2))
        else:
            print_fleet_sustainable(found, options.slo_ttft_s, Console())
        return 0
    report = simulate_fleet(fleet, options, result)
    if args.output == "json":
        print(json.dumps(fleet_sim_json(report), indent=2))
    else:
        print_fleet_sim(report, Console())
    return 0

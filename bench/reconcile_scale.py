"""Slow-loop cost on a real API server: N PDClusters, one operator process.

Starts a local control plane (built by `make k8s-bin`), installs the CRDs and N PDClusters
(Observe mode), each in its own namespace with its PrefillPool and three Deployments, then
measures (1) one reconcile pass in-process (read 3 /scale, plan, write status) for each CR, and
(2) `prfaas operator` as a process: time until every PDCluster has a plan, with the process's
CPU time and peak RSS; with ``--rounds R`` the next R rounds too (``intervalSeconds`` 60:
every CR must be planned anew within each 60 s).

    make bench-reconcile        # or: .venv/bin/python bench/reconcile_scale.py --count 200
    make bench-operator-scale   # 1000 PDClusters, two rounds after the first
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import watch
from kubernetes.client import ApiClient, CustomObjectsApi

from prfaas.api import PDCluster
from prfaas.controller.kube import Cluster, Members
from prfaas.controller.reconcile import Reconciler, Resource
from prfaas.controller.signals import prometheus_query_factory
from prfaas_dev.cluster import ControlPlane
from prfaas_dev.many import NAME, lone_clusters, namespace_of
from prfaas_dev.procs import Proc

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"  # namespaces bench-0000, bench-0001, ...
PDC = PDCluster.resource
INTERVAL_S = 60


def ns_of(i: int) -> str:
    return namespace_of(NS, i)


def in_process(cp: ControlPlane, count: int) -> None:
    """One pass per CR in this process, one after another (no kopf, no event loop)."""
    from kubernetes import config

    api = config.new_client_from_config(str(cp.kubeconfig))
    local = Cluster(api)
    rec = Reconciler(Members(local), prometheus_query_factory(), lambda: datetime.now(UTC))
    passes = []
    t0 = time.perf_counter()
    for i in range(count):
        ns = ns_of(i)
        obj = local.get_custom(PDC.plural, ns, NAME)
        assert obj is not None
        start = time.perf_counter()
        res = Resource.parse(NAME, ns, obj["metadata"]["generation"], obj["spec"], None)
        out = rec.reconcile(res)
        status = out.status.model_dump(by_alias=True, exclude_none=True, mode="json")
        local.patch_status(PDC.plural, ns, NAME, status)
        passes.append((time.perf_counter() - start) * 1e3)
    total = time.perf_counter() - t0
    passes.sort()
    print(
        f"in-process reconcile, {count} PDClusters: total {total:.2f} s, per pass "
        f"median {statistics.median(passes):.1f} ms, p99 "
        f"{passes[int(0.99 * (len(passes) - 1))]:.1f} ms"
    )


class Usage:
    """CPU seconds and peak RSS of a process, read from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mib = pid, 0.0
        self.ticks = os.sysconf("SC_CLK_TCK")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime

    def sample(self) -> None:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # the kernel's own high-water mark
                self.peak_mib = int(line.split()[1]) / 1024


def _observed_at(obj: dict[str, Any]) -> datetime | None:
    at = ((obj.get("status") or {}).get("signals") or {}).get("observedAt")
    return datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None


class Planned:
    """Each CR's last plan time (status.signals.observedAt), followed by a watch: one event per
    status write, where a poll would list 1000 CRs (~5 MB of JSON) each time."""

    def __init__(self, api: ApiClient) -> None:
        self.crs = CustomObjectsApi(api)
        self.at: dict[str, datetime | None] = {}
        self.gaps: list[float] = []  # seconds between a CR's plan and its next one
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        listing: dict[str, Any] = self.crs.list_cluster_custom_object(
            PDC.group, PDC.version, PDC.plural
        )
        for o in listing["items"]:
            self.at[o["metadata"]["namespace"]] = _observed_at(o)
        self.rv = listing["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        while not self.stopped.is_set():
            try:
                for ev in watch.Watch().stream(
                    self.crs.list_cluster_custom_object, PDC.group, PDC.version, PDC.plural,
                    resource_version=self.rv, timeout_seconds=60,
                ):  # fmt: skip
                    obj = ev["object"]
                    self.rv = obj["metadata"]["resourceVersion"]
                    name, at = obj["metadata"]["namespace"], _observed_at(obj)
                    with self.lock:
                        old = self.at.get(name)
                        if old is not None and at is not None and at > old:
                            self.gaps.append((at - old).total_seconds())
                        self.at[name] = at
                    if self.stopped.is_set():
                        return
            except Exception as exc:  # a loaded API server: watch again from where it was
                print(f"(watch: {type(exc).__name__}, again)", file=sys.stderr)
                time.sleep(1)

    def since(self, since: datetime) -> list[float]:
        """Seconds after ``since`` of the CRs planned after it."""
        with self.lock:
            times = list(self.at.values())
        return sorted((t - since).total_seconds() for t in times if t is not None and t > since)


def spread(after: list[float]) -> str:
    """When the CRs were planned (one-second resolution)."""
    if not after:
        return "none planned"
    pick = [after[int(q * (len(after) - 1))] for q in (0.0, 0.5, 0.9, 1.0)]
    return "planned at first/p50/p90/last " + "/".join(f"{s:.0f}" for s in pick) + " s"


def wait_round(planned: Planned, count: int, since: datetime, usage: Usage, limit: float) -> int:
    """Until every CR was planned after ``since`` (or ``limit`` s): how many were."""
    t0 = time.perf_counter()
    while True:
        usage.sample()
        done = len(planned.since(since))
        if done == count or time.perf_counter() - t0 > limit:
            return done
        time.sleep(0.5)


def operator_process(
    cp: ControlPlane, tmp: Path, count: int, rounds: int, profile: Path | None
) -> None:
    """`prfaas operator` as deployed: time until every CR was planned anew, then per round."""
    from kubernetes import config

    planned = Planned(config.new_client_from_config(str(cp.kubeconfig)))
    started = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.1)  # observedAt has one-second resolution
    argv = [sys.executable, "-m", "prfaas.cli", "operator", "--metrics-port", "0"]
    argv += ["--liveness", "none", "--log-format", "plain"]
    t0 = time.perf_counter()
    op = Proc.spawn("operator", argv, tmp / "operator.log", env={"KUBECONFIG": str(cp.kubeconfig)})
    spy = None
    if profile is not None:
        spy_argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(op.pid)]
        fmt = "flamegraph" if profile.suffix == ".svg" else "raw"  # raw: collapsed stacks
        spy_argv += ["--rate", "50", "--threads", "-f", fmt, "-o", str(profile)]
        spy = subprocess.Popen(spy_argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    usage = Usage(op.pid)
    try:
        done = wait_round(planned, count, started, usage, 600)
        first = time.perf_counter() - t0
        print(
            f"operator process: {done}/{count} PDClusters planned {first:.1f} s after start; "
            f"CPU {usage.cpu_s():.1f} s, peak RSS {usage.peak_mib:.0f} MiB; "
            f"{spread(planned.since(started))}"
        )
        for r in range(rounds):
            since = datetime.now(UTC).replace(microsecond=0)
            time.sleep(1.1)
            t1, cpu1 = time.perf_counter(), usage.cpu_s()
            planned.gaps.clear()
            done = wait_round(planned, count, since, usage, 3 * INTERVAL_S)
            took = time.perf_counter() - t1
            gaps = planned.gaps or [0.0]
            print(
                f"round {r + 1}: {done}/{count} planned anew within {took:.1f} s "
                f"(intervalSeconds {INTERVAL_S}); CPU {usage.cpu_s() - cpu1:.1f} s, "
                f"peak RSS {usage.peak_mib:.0f} MiB; a CR's plan to its next: median "
                f"{statistics.median(gaps):.0f} s, max {max(gaps):.0f} s"
            )
    finally:
        op.stop(grace_s=20)
        if spy is not None:  # py-spy writes its output once the process is gone
            spy.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="PDClusters (default 200)")
    parser.add_argument(
        "--rounds", type=int, default=0, help="measure this many rounds after the first"
    )
    parser.add_argument(
        "--skip-inprocess", action="store_true", help="only measure the operator process"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the operator into this file (.svg: flame graph, else raw stacks)",
    )
    args = parser.parse_args()
    interval = INTERVAL_S if args.rounds else 3600
    with tempfile.TemporaryDirectory() as tmp:
        cp = ControlPlane(state_dir=Path(tmp) / "cp").start()
        try:
            print(f"control plane up in {cp.startup_seconds:.1f} s")
            cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cp.kubectl("wait", "--for=condition=Established", f"crd/{PDC.name}")
            manifest = Path(tmp) / "objects.yaml"
            manifest.write_text(yaml.safe_dump_all(lone_clusters(NS, args.count, interval)))
            t0 = time.perf_counter()
            cp.kubectl("apply", "--server-side", "-f", str(manifest))
            print(f"created {args.count} PDClusters in {time.perf_counter() - t0:.1f} s")
            if not args.skip_inprocess:
                in_process(cp, args.count)
            operator_process(cp, Path(tmp), args.count, args.rounds, args.profile)
        finally:
            cp.stop()


if __name__ == "__main__":
    main()

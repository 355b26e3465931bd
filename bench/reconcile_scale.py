"""Slow-loop cost on a real API server: 200 PDClusters.

Starts a local control plane (built by `make k8s-bin`), installs the CRDs, one PrefillPool and
N PDClusters (Observe mode, sharing three Deployments as scale targets), then measures
(1) one reconcile pass in-process (read 3 /scale, plan, write status) for each CR, and
(2) `prfaas operator` as a process: time until every PDCluster has a plan.

    make bench-reconcile        # or: .venv/bin/python bench/reconcile_scale.py --count 200
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from prfaas.api import PDCluster
from prfaas.controller.kube import Cluster, Members
from prfaas.controller.reconcile import Reconciler, Resource
from prfaas.controller.signals import prometheus_query_factory
from prfaas_dev.cluster import ControlPlane, scale_target
from prfaas_dev.procs import Proc

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
PDC = PDCluster.resource


def objects(count: int) -> list[dict[str, object]]:
    pool = yaml.safe_load((ROOT / "manifests/samples/prefillpool-h200.yaml").read_text())
    pd = yaml.safe_load((ROOT / "manifests/samples/pdcluster-h20.yaml").read_text())
    pool["metadata"]["namespace"] = NS
    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        scale_target("h200-prefill", NS, 4),
        scale_target("h20-prefill", NS, 5),
        scale_target("h20-decode", NS, 3),
        pool,
    ]
    for i in range(count):
        doc = copy.deepcopy(pd)
        doc["metadata"] = {"name": f"pd-{i:03d}", "namespace": NS}
        doc["spec"]["policy"].update({"mode": "Observe", "intervalSeconds": 3600})
        docs.append(doc)
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cp = ControlPlane(state_dir=Path(tmp) / "cp").start()
        try:
            print(f"control plane up in {cp.startup_seconds:.1f} s")
            cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cp.kubectl("wait", "--for=condition=Established", f"crd/{PDC.name}")
            manifest = Path(tmp) / "objects.yaml"
            manifest.write_text(yaml.safe_dump_all(objects(args.count)))
            t0 = time.perf_counter()
            cp.kubectl("apply", "--server-side", "-f", str(manifest))
            print(f"created {args.count} PDClusters in {time.perf_counter() - t0:.1f} s")

            from kubernetes import config

            api = config.new_client_from_config(str(cp.kubeconfig))
            local = Cluster(api)
            rec = Reconciler(Members(local), prometheus_query_factory(), lambda: datetime.now(UTC))
            passes = []
            t0 = time.perf_counter()
            for i in range(args.count):
                name = f"pd-{i:03d}"
                obj = local.get_custom(PDC.plural, NS, name)
                assert obj is not None
                start = time.perf_counter()
                res = Resource.parse(name, NS, obj["metadata"]["generation"], obj["spec"], None)
                out = rec.reconcile(res)
                status = out.status.model_dump(by_alias=True, exclude_none=True, mode="json")
                local.patch_status(PDC.plural, NS, name, status)
                passes.append((time.perf_counter() - start) * 1e3)
            total = time.perf_counter() - t0
            passes.sort()
            print(
                f"in-process reconcile, {args.count} PDClusters: total {total:.2f} s, per pass "
                f"median {statistics.median(passes):.1f} ms, p99 "
                f"{passes[int(0.99 * (len(passes) - 1))]:.1f} ms"
            )

            # the operator as a process, as deployed: time until every CR was planned anew
            started = datetime.now(UTC).replace(microsecond=0)
            time.sleep(1.1)  # observedAt has one-second resolution
            argv = [sys.executable, "-m", "prfaas.cli", "operator", "--metrics-port", "0"]
            argv += ["--liveness", "none", "--log-format", "plain"]
            t0 = time.perf_counter()
            op = Proc.spawn(
                "operator", argv, Path(tmp) / "operator.log", env={"KUBECONFIG": str(cp.kubeconfig)}
            )
            try:
                while True:
                    listing = yaml.safe_load(
                        cp.kubectl("get", PDC.plural, "-n", NS, "-o", "yaml").stdout
                    )
                    done = sum(
                        1
                        for o in listing["items"]
                        if datetime.fromisoformat(
                            o["status"]["signals"]["observedAt"].replace("Z", "+00:00")
                        )
                        > started
                    )
                    if done == args.count or time.perf_counter() - t0 > 600:
                        break
                    time.sleep(1)
                print(
                    f"operator process: {done}/{args.count} PDClusters planned "
                    f"{time.perf_counter() - t0:.1f} s after start"
                )
            finally:
                op.stop(grace_s=20)
        finally:
            cp.stop()


if __name__ == "__main__":
    main()

"""Many copies of the case study on one control plane: each PDCluster alone in its namespace
with its PrefillPool and ``/scale`` targets (PDClusters that share a pool would be one fleet,
planned jointly). For the operator-at-scale bench and test."""

from __future__ import annotations

import copy

from prfaas_dev.cluster import scale_target
from prfaas_dev.demo.scenario import load_samples

NAME = "h20-pd"  # every PDCluster's name; the namespace tells them apart


def namespace_of(prefix: str, i: int) -> str:
    return f"{prefix}-{i:04d}"


def lone_clusters(prefix: str, count: int, interval_s: int) -> list[dict[str, object]]:
    """``count`` case studies in namespaces ``<prefix>-0000``…, planning in Observe mode every
    ``interval_s`` seconds."""
    pd, pool = load_samples()
    docs: list[dict[str, object]] = []
    for i in range(count):
        ns = namespace_of(prefix, i)
        docs += [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            scale_target("h200-prefill", ns, 4),
            scale_target("h20-prefill", ns, 5),
            scale_target("h20-decode", ns, 3),
            {**copy.deepcopy(pool), "metadata": {"name": "h200-pool", "namespace": ns}},
        ]
        doc = copy.deepcopy(pd)
        doc["metadata"] = {"name": NAME, "namespace": ns}
        doc["spec"]["policy"].update({"mode": "Observe", "intervalSeconds": interval_s})
        docs.append(doc)
    return docs

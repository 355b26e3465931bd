"""The operator's own metrics (prometheus_client), labelled by PDCluster (bounded cardinality).

Names follow Prometheus conventions: base units (seconds, bytes), ``_total`` counters, plain
counts for instances and versions. A deleted PDCluster's series are removed (``forget``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("namespace", "pdcluster")

RECONCILES = Counter(
    "prfaas_operator_reconciles_total", "Slow-loop passes by outcome phase", [*LABELS, "phase"]
)
ERRORS = Counter("prfaas_operator_errors_total", "Unexpected reconcile errors", LABELS)
SCALE_ACTIONS = Counter(
    "prfaas_operator_scale_actions_total", "/scale patches applied", [*LABELS, "group", "direction"]
)
RECONCILE_SECONDS = Histogram(
    "prfaas_operator_reconcile_seconds",
    "Duration of one slow-loop pass",
    LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PLAN_THRESHOLD = Gauge("prfaas_plan_threshold_tokens", "Planned threshold t", LABELS)
PLAN_THROUGHPUT = Gauge("prfaas_plan_throughput_requests_per_second", "Planned Λ_max", LABELS)
PLAN_INSTANCES = Gauge("prfaas_plan_instances", "Planned instances per group", [*LABELS, "group"])
PLAN_EGRESS = Gauge(
    "prfaas_plan_egress_bytes_per_second", "Planned PrefillPool egress (KVCache)", LABELS
)
POLICY_VERSION = Gauge("prfaas_routing_policy_version", "Published routing-policy version", LABELS)
SIGNALS_STALE = Gauge("prfaas_signals_stale", "1 while holding the last good plan", LABELS)
PLANS = Counter(
    "prfaas_operator_plans_total",
    "Plans asked for, by whether the memo had them (hit) or the planner searched (miss)",
    ["memo"],
)


def forget(namespace: str, pdcluster: str) -> None:
    """Remove every series of one PDCluster (it was deleted, or the operator stops watching it)."""
    mine = {"namespace": namespace, "pdcluster": pdcluster}
    for metric in (
        RECONCILES, ERRORS, SCALE_ACTIONS, RECONCILE_SECONDS, PLAN_THRESHOLD, PLAN_THROUGHPUT,
        PLAN_INSTANCES, PLAN_EGRESS, POLICY_VERSION, SIGNALS_STALE,
    ):  # fmt: skip
        names = _LABEL_NAMES[metric]
        seen = set()
        for family in metric.collect():
            for sample in family.samples:
                if all(sample.labels.get(k) == v for k, v in mine.items()):
                    seen.add(tuple(sample.labels[n] for n in names))
        for values in seen:
            metric.remove(*values)


_LABEL_NAMES: dict[Counter | Gauge | Histogram, tuple[str, ...]] = {
    RECONCILES: (*LABELS, "phase"),
    ERRORS: LABELS,
    SCALE_ACTIONS: (*LABELS, "group", "direction"),
    RECONCILE_SECONDS: LABELS,
    PLAN_THRESHOLD: LABELS,
    PLAN_THROUGHPUT: LABELS,
    PLAN_INSTANCES: (*LABELS, "group"),
    PLAN_EGRESS: LABELS,
    POLICY_VERSION: LABELS,
    SIGNALS_STALE: LABELS,
}

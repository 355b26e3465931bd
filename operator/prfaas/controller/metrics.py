"""The operator's own metrics (prometheus_client), labelled by PDCluster (bounded cardinality)."""

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
PLAN_THROUGHPUT = Gauge("prfaas_plan_throughput_rps", "Planned Λ_max", LABELS)
PLAN_INSTANCES = Gauge("prfaas_plan_instances", "Planned instances per group", [*LABELS, "group"])
PLAN_EGRESS = Gauge("prfaas_plan_egress_gbps", "Planned PrefillPool egress", LABELS)
POLICY_VERSION = Gauge("prfaas_routing_policy_version", "Published routing-policy version", LABELS)
SIGNALS_STALE = Gauge("prfaas_signals_stale", "1 while holding the last good plan", LABELS)

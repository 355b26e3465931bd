"""Prometheus metric names that the operator's default queries read, defined once.

The router (``prfaas.router.metrics``) and the engines (``prfaas.engine.metrics``) register
their metrics under these names; ``prfaas.api.pdcluster.PrometheusQueries`` builds its
defaults from them. No imports, so the API, the router and the engine can all use it.
"""

ROUTER_REQUESTS = "prfaas_router_requests"
"""Counter (``_total``) of routed requests, by ``target`` and ``reason``."""
ROUTER_UNCACHED_TOKENS = "prfaas_router_uncached_tokens"
"""Histogram (``_bucket``) of routed requests' uncached prompt tokens: the length distribution."""
ROUTER_OUTPUT_TOKENS = "prfaas_router_output_tokens"
"""Histogram (``_sum``/``_count``) of requested output tokens."""
ROUTER_LINK_BYTES = "prfaas_router_link_bytes"
"""Counter (``_total``) of nominal KV bytes sent over each pool's link, by ``pool``."""
ENGINE_REQUESTS_WAITING = "vllm:num_requests_waiting"
"""Gauge of an engine's queued requests (vLLM's name, which peers and dashboards know)."""
ENGINE_KV_OFFERED = "prfaas_engine_kv_offered_bytes"
"""Counter (``_total``) of nominal KV bytes a prefill engine offered to decode engines."""
ENGINE_KV_PENDING = "prfaas_engine_kv_pending_bytes"
"""Gauge of nominal KV bytes a prefill engine offered and has not sent yet (stored or sending):
with the counter above, the pool side of a link's load, alike for every router replica."""
PDCLUSTER_LABEL = "pdcluster"
"""Label on every router series: the PDCluster it serves, ``<namespace>/<name>`` (the default
queries select ``pdcluster=~"<it>|"``: that cluster's routers, or unlabelled ones)."""

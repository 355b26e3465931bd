"""vLLM-style ``/metrics`` (names peers and dashboards know) plus the engine's own KV counters.

No ``engine`` label: vllm-router counts distinct ``engine`` values to detect data parallelism.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from prfaas import metric_names as names


class EngineMetrics:
    def __init__(self, model: str, role: str) -> None:
        self.registry = r = CollectorRegistry()
        labels = ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "in prefill or decode", labels,
                             registry=r).labels(model)  # fmt: skip
        self.waiting = Gauge(names.ENGINE_REQUESTS_WAITING, "queued for prefill or a decode slot",
                             labels, registry=r).labels(model)  # fmt: skip
        self.prompt_tokens = Counter("vllm:prompt_tokens", "prompt tokens prefilled", labels,
                                     registry=r).labels(model)  # fmt: skip
        self.generation_tokens = Counter("vllm:generation_tokens", "tokens generated", labels,
                                         registry=r).labels(model)  # fmt: skip
        self.cache_queries = Counter("vllm:prefix_cache_queries", "prompt tokens looked up",
                                     labels, registry=r).labels(model)  # fmt: skip
        self.cache_hits = Counter("vllm:prefix_cache_hits", "prompt tokens found cached",
                                  labels, registry=r).labels(model)  # fmt: skip
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "arrival to first token",
                              labels, registry=r,
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
                              ).labels(model)  # fmt: skip
        self.requests = Counter("prfaas_engine_requests", "requests by phase run here",
                                ["phase"], registry=r)  # fmt: skip
        self.handoffs = Counter("prfaas_engine_handoffs", "KVCaches prefilled for a decode "
                                "engine, by P/D protocol", ["protocol"], registry=r)  # fmt: skip
        self.kv_sent = Counter("prfaas_engine_kv_sent_bytes", "KV bytes served (scaled)",
                               registry=r)  # fmt: skip
        # the pool side of the link's load, which every router replica reads alike: KV offered
        # to decode (nominal bytes, as routers meter them) and what of it is not sent yet
        self.kv_offered = Counter(names.ENGINE_KV_OFFERED, "nominal KV bytes offered to decode",
                                  registry=r)  # fmt: skip
        self.kv_pending = Gauge(names.ENGINE_KV_PENDING, "nominal KV bytes offered to decode "
                                "and not sent yet", registry=r)  # fmt: skip
        self.kv_received = Counter("prfaas_engine_kv_received_bytes",
                                   "KV bytes fetched (scaled)", registry=r)  # fmt: skip
        self.kv_seconds = Histogram("prfaas_engine_kv_fetch_seconds", "KV fetch duration",
                                    registry=r,
                                    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))  # fmt: skip
        self.kv_failures = Counter("prfaas_engine_kv_fetch_failures", "KV fetches that failed",
                                   registry=r)  # fmt: skip
        info = Gauge("prfaas_engine_info", "engine role", ["role", "model_name"], registry=r)
        info.labels(role, model).set(1)

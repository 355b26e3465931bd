"""A simulated inference engine that real routers can drive (``prfaas engine``).

OpenAI-compatible completions and chat (JSON and SSE), vLLM-style ``/metrics``, and both P/D
hand-offs peer routers use (vLLM's two-phase ``kv_transfer_params`` flow and SGLang's bootstrap
flow). Timing comes from a ``prfaas.model`` instance profile, divided by a speed-up factor; the
KVCache really travels over TCP (``kv``), through a shaped link process for cross-datacenter
hops (``link``). The answer's text is deterministic: token ``k`` is ``" tok{k}"``.
"""

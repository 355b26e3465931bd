"""The demo's time-scaled resources plan like the paper's, and its client-side statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from prfaas.api.pdcluster import PDClusterSpec
from prfaas.api.planning import scenario_for
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.model.planner import plan
from prfaas_dev.demo.load import Record, window
from prfaas_dev.demo.scenario import demo_resources, load_samples

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_samples_are_the_published_ones() -> None:
    pkg = ROOT / "devtools/prfaas_dev/demo/samples"
    for name in ("pdcluster-h20.yaml", "prefillpool-h200.yaml"):
        assert (pkg / name).read_text() == (ROOT / "manifests/samples" / name).read_text()


@pytest.mark.parametrize("speedup", [1.0, 10.0])
def test_time_scaling_keeps_the_threshold_and_split(speedup: float) -> None:
    urls = [f"http://127.0.0.1:{9000 + k}" for k in range(7)]
    pd, pool = demo_resources(speedup, urls[:4], urls, urls, "secret", 4)
    spec = PDClusterSpec.model_validate(pd["spec"])
    pool_spec = PrefillPoolSpec.model_validate(pool["spec"])
    link = spec.prefill_pools[0]
    assert spec.workload.declared is not None
    scaled = plan(
        scenario_for("pd", spec, link.name, pool_spec, 4, link.link, spec.workload.declared)
    )
    base_pd, base_pool = load_samples()
    base_spec = PDClusterSpec.model_validate(base_pd["spec"])
    assert base_spec.workload.declared is not None
    base = plan(
        scenario_for(
            "pd",
            base_spec,
            link.name,
            PrefillPoolSpec.model_validate(base_pool["spec"]),
            4,
            base_spec.prefill_pools[0].link,
            base_spec.workload.declared,
        )
    )
    assert scaled.prfaas.threshold_tokens == base.prfaas.threshold_tokens
    assert (scaled.prfaas.n_prefill, scaled.prfaas.n_decode) == (
        base.prfaas.n_prefill,
        base.prfaas.n_decode,
    )
    assert scaled.prfaas.throughput_rps == pytest.approx(base.prfaas.throughput_rps * speedup)


def test_window_counts_waiting_requests_and_scales_time() -> None:
    recs = [
        Record(sent=float(i), tokens=1000, ttft=0.5, done=i + 2.0, ok=True, target="pool")
        for i in range(10)
    ]
    recs += [Record(sent=5.5, tokens=50_000) for _ in range(3)]  # still waiting at the end
    w = window(recs, 0.0, 10.0, speedup=10.0, slo_s=6.0)
    assert w.sent == 13 and w.completed == 8  # done at 2..9 fall in [0, 10)
    assert w.throughput == pytest.approx(8 / 100)  # 10 wall s = 100 case-study s
    assert w.ttft_p50 == pytest.approx(5.0)  # 0.5 s wall, scaled
    assert w.ttft_p90 > 5.0  # the waiting ones (≥ 45 s) pulls the tail up
    assert w.goodput == pytest.approx(8 / 100)
    assert w.offload == pytest.approx(10 / 13)

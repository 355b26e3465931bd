"""Every request arrives once, completes once and is accounted, under every configuration and
the stresses (outage, link drop, bursts, prefix caches, role conversions)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from prfaas.model.planner import plan
from prfaas.model.scenario import case_study
from prfaas.routing.decide import Target
from prfaas.sim import POLICIES, Bursts, LinkSchedule, PrefixSettings, SimOptions, simulate
from prfaas.sim.engine import Engine, Record
from prfaas.sim.run import bucket_for, prepare
from prfaas.sim.setups import setups, tables

N = 600


def records(options: SimOptions) -> dict[str, Record]:
    scenario, result, requests = prepare(case_study(), options)
    tab = tables(scenario, int(requests.tokens.max()))
    out = {}
    for setup in setups(result, options.policies, options.routing):
        bucket = bucket_for(float(requests.arrival[-1]), options)
        out[setup.name] = Engine(scenario, setup, requests, options, tab, bucket).run()
    return out


def check(rec: Record, n: int, drained: bool) -> None:
    target = np.array(rec.target)
    done = np.array(rec.done)
    first = np.array(rec.first_token)
    arrival = np.array(rec.arrival)
    assert (target != -2).sum() == n  # every request arrived exactly once
    dropped = target == int(Target.REJECT)
    finished = ~np.isnan(done)
    assert rec.completions == finished.sum()  # no request finished twice
    assert not (finished & dropped).any()
    if drained:
        assert (finished | dropped).all()  # ...and every other one finished
    assert (first[finished] >= arrival[finished]).all()
    assert (done[finished] >= first[finished]).all()
    assert set(np.unique(target)) <= {int(t) for t in Target}


@pytest.mark.parametrize("policy", POLICIES)
def test_every_request_completes_once_when_run_to_empty(policy: str) -> None:
    rec = records(SimOptions(requests=N, policies=(policy,)))[policy]
    check(rec, N, drained=True)
    assert not any(t == int(Target.REJECT) for t in rec.target)


def test_summary_accounts_for_every_request() -> None:
    report = simulate(case_study(), SimOptions(requests=N, rate_rps=4.0, drain_s=0))
    for s in (r.summary for r in report.results.values()):
        assert s["arrived"] == N
        assert s["completed"] + s["dropped"] + s["unfinished"] == N
        assert s["unfinished"] > 0  # stopped at the last arrival, overloaded
        assert s["ttft_censored"] <= s["unfinished"]
    assert report.results["homogeneous"].summary["egress_gbps_mean"] == 0
    assert report.results["naive"].summary["offload_fraction"] == 1.0


def test_deterministic_with_a_seed() -> None:
    a = simulate(case_study(), SimOptions(requests=300, seed=3, policies=("prfaas",)))
    b = simulate(case_study(), SimOptions(requests=300, seed=3, policies=("prfaas",)))
    c = simulate(case_study(), SimOptions(requests=300, seed=4, policies=("prfaas",)))
    sa, sb, sc = (r.results["prfaas"].summary for r in (a, b, c))
    assert sa == sb and sa != sc


def test_outage_fails_open_and_naive_has_nowhere_to_go() -> None:
    options = SimOptions(
        requests=N, rate_rps=1.5, link=LinkSchedule.parse("100:0,250:100"), policies=POLICIES
    )
    recs = records(options)
    for name in ("prfaas_static", "prfaas"):
        check(recs[name], N, drained=True)
        assert not any(t == int(Target.REJECT) for t in recs[name].target)
        assert recs[name].reasons.get("fail-open", 0) > 0
    naive = recs["naive"]
    check(naive, N, drained=True)  # the ones it could not place are dropped, and counted
    assert 0 < sum(t == int(Target.REJECT) for t in naive.target) < N


def test_link_drop_with_bursts_converts_roles_and_loses_nothing() -> None:
    options = SimOptions(
        requests=2500,
        rate_rps=2.7,
        arrivals="bursty",
        bursts=Bursts(1.5, 60, 120),
        link=LinkSchedule.parse("60:10,700:100"),
        policies=("prfaas",),
        stable_s=60,
        cooldown_s=60,
        role_change_s=30,
    )
    rec = records(options)["prfaas"]
    check(rec, 2500, drained=True)
    assert rec.role_changes >= 2 and rec.policy_versions >= 3
    assert rec.final_split == (3, 5)  # back to the plan once the link recovered


def conversation_trace(path: Path, n: int, seed: int = 1) -> None:
    """Multi-turn sessions: a turn extends its session's previous prompt (Mooncake format)."""
    rng = random.Random(seed)
    sessions: list[tuple[list[int], int]] = []
    nxt, t, lines = 0, 0.0, []
    for _ in range(n):
        t += rng.expovariate(1.5)
        if sessions and rng.random() < 0.6:
            k = rng.randrange(len(sessions))
            ids, length = sessions[k]
            new = length + rng.randint(2000, 20000)
        else:
            k, ids, length = -1, [], 0
            new = int(min(120_000, max(600, rng.lognormvariate(9.9, 1.0))))
        full, blocks = length // 512, math.ceil(new / 512)
        hashes = ids[:full] + list(range(nxt, nxt + blocks - full))
        nxt += blocks - full
        lines.append(
            json.dumps(
                {
                    "timestamp": int(t * 1000),
                    "input_length": new,
                    "output_length": 256,
                    "hash_ids": hashes,
                }
            )
        )
        if k < 0:
            sessions.append((hashes, new))
        else:
            sessions[k] = (hashes, new)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_trace_with_prefix_reuse_and_cache_transfers(tmp_path: Path) -> None:
    path = tmp_path / "conv.jsonl"
    conversation_trace(path, 800)
    options = SimOptions(arrivals="trace", trace=path, policies=("prfaas_static", "prfaas"))
    recs = records(options)
    for rec in recs.values():
        check(rec, 800, drained=True)
    assert recs["prfaas_static"].cache_transfers == 0  # scarce: each cluster on its own
    assert recs["prfaas"].cache_transfers > 0  # abundant: the best cache, moved across
    # the slow loop planned from the uncached lengths, not the prompt lengths
    _, result, _ = prepare(case_study(), options)
    assert result.prfaas.threshold_tokens is not None
    assert result.prfaas.threshold_tokens < plan(case_study()).prfaas.threshold_tokens


def test_hit_rate_caches_shrink_the_uncached_work() -> None:
    prefix = PrefixSettings(hit_rate_pd=0.8, hit_rate_pool=0.2, cached_fraction=0.9)
    cold = simulate(case_study(), SimOptions(requests=N, policies=("prfaas",)))
    warm = simulate(case_study(), SimOptions(requests=N, policies=("prfaas",), prefix=prefix))
    c, w = cold.results["prfaas"].summary, warm.results["prfaas"].summary
    assert w["completed"] == N
    assert w["offload_fraction"] < c["offload_fraction"]
    assert w["ttft_p90_s"] < c["ttft_p90_s"]

"""The router's trust-boundary parts on their own: the endpoint allowlist, the JSON depth
count, API key files, and the fleet dropping declared endpoints the allowlist does not hold
(those found from EndpointSlices stay). The boundaries on a real router process:
``tests/integration/test_router_trust.py``."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pytest

from prfaas.commands import router as router_cmd
from prfaas.router import auth
from prfaas.router.allow import AllowError, Allowlist
from prfaas.router.auth import ApiKeys, KeyFileError
from prfaas.router.fleet import Fleet
from prfaas.router.limits import Gate, Limits, json_depth
from prfaas.routing.policy import EndpointSource, PoolRoute, RoutingPolicy


@pytest.mark.parametrize(
    ("entry", "allowed", "refused"),
    [
        ("10.8.0.0/16", ["http://10.8.3.4:8000", "https://10.8.0.1"], ["http://10.9.0.1:8000",
         "http://pool.example:8000", "http://[::1]:8000"]),
        ("127.0.0.2/32", ["http://127.0.0.2:1"], ["http://127.0.0.1:1"]),
        ("::1/128", ["http://[::1]:8000"], ["http://127.0.0.1:8000"]),
        ("pool.example", ["http://pool.example:1", "https://POOL.example"],
         ["http://x.pool.example", "http://pool.example.evil"]),
        ("pool.example:8000", ["http://pool.example:8000"], ["http://pool.example:8001",
         "http://pool.example"]),
        ("*.svc.cluster.local", ["http://e.ns.svc.cluster.local:8000"],
         ["http://svc.cluster.local", "http://evil-svc.cluster.local"]),
        ("https://pool.example/v1", ["https://pool.example/v1", "https://pool.example/v1/x"],
         ["https://pool.example/v10", "http://pool.example/v1"]),
        ("http://127.0.0.1:8000", ["http://127.0.0.1:8000", "http://127.0.0.1:8000/a"],
         ["http://127.0.0.1:80001", "http://127.0.0.1:80"]),
    ],
)  # fmt: skip
def test_allowlist_entries(entry: str, allowed: list[str], refused: list[str]) -> None:
    a = Allowlist([entry])
    assert [u for u in allowed if not a.allows(u)] == []
    assert [u for u in refused if a.allows(u)] == []


def test_an_empty_allowlist_allows_any_and_bad_entries_are_refused() -> None:
    assert Allowlist().allows("http://anything:1") and not Allowlist().entries
    for bad in ("ftp://x/", "http://", "a b", "host:port", ":80", "*.", "x/y"):
        with pytest.raises(AllowError):
            Allowlist([bad])


def test_json_depth() -> None:
    assert json_depth(1, 64) == 0 and json_depth([], 64) == 1 and json_depth({}, 64) == 1
    assert json_depth({"prompt": list(range(100_000))}, 64) == 2
    assert json_depth({"m": [{"c": [{"t": "x"}]}]}, 64) == 5
    deep: list[object] = []
    for _ in range(5_000):  # iterative: no recursion limit
        deep = [deep]
    assert json_depth(deep, 64) == 65  # stops counting past the limit
    assert json_depth([1, "a", [2, [3]]], 64) == 3  # a container among scalars


def test_gate() -> None:
    g = Gate(2)
    assert g.enter() and g.enter() and not g.enter()
    g.leave()
    assert g.enter()


def test_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_RECHECK_S", 0.0)
    f = tmp_path / "keys"
    f.write_text("k1\n\n  k2 \n")
    keys = ApiKeys(f)
    assert keys.allows("Bearer k1") and keys.allows("bearer k2") and keys.allows("Bearer  k2")
    for bad in (None, "", "k1", "Bearer", "Bearer k3", "Basic k1", "Bearer k1x"):
        assert not keys.allows(bad), bad
    f.write_text("k3\n")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert keys.allows("Bearer k3") and not keys.allows("Bearer k1")
    f.write_text("\n")  # emptied (a half-written Secret): the keys before are kept
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert keys.allows("Bearer k3")
    with pytest.raises(KeyFileError, match="holds no key"):
        ApiKeys(f)
    with pytest.raises(KeyFileError, match="cannot read"):
        ApiKeys(tmp_path / "missing")


SOURCE = EndpointSource("ns", "app=p")


def test_the_fleet_drops_declared_endpoints_outside_the_allowlist_not_found_ones() -> None:
    fleet = Fleet(allow=Allowlist(["10.0.0.0/24"]))
    pool = PoolRoute("pool", ("http://10.0.0.5:8000", "http://evil:8000"), 100.0)
    policy = RoutingPolicy(1, 19_400, (pool,), ("http://10.0.1.1:8000",), ("http://10.0.0.9:1",),
                           prefill_source=SOURCE)  # fmt: skip
    bad = fleet.apply(policy)
    assert sorted(bad) == [("http://10.0.1.1:8000", "not_allowed"),
                           ("http://evil:8000", "not_allowed")]  # fmt: skip
    assert fleet.policy is not None
    assert fleet.policy.pools[0].endpoints == ("http://10.0.0.5:8000",)
    assert fleet.policy.prefill_endpoints == () and "http://evil:8000" not in fleet.engines
    # found from EndpointSlices: allowed whatever the list says
    fleet.set_found(SOURCE, ["http://10.7.0.1:8000"])
    assert fleet.policy.prefill_endpoints == ("http://10.7.0.1:8000",)


def test_a_closed_allowlist_keeps_only_what_was_found_and_any_opens_it() -> None:
    """``--pdcluster`` without ``--allow-endpoint``: no declared URL, but a pool's engines the
    operator found in EndpointSlices (``discovered``) are kept."""
    closed = Allowlist((), closed=True)
    assert not closed.allows("http://10.0.0.1:80")
    assert Allowlist(["any"], closed=True).allows("http://anywhere:1")
    fleet = Fleet(allow=closed)
    found = PoolRoute("found", ("http://10.9.0.1:8000",), 1.0, discovered=True)
    declared = PoolRoute("declared", ("http://10.9.0.2:8000",), 1.0)
    bad = fleet.apply(RoutingPolicy(1, 1, (found, declared), ("http://p:1",), ("http://d:1",)))
    assert sorted(u for u, _ in bad) == ["http://10.9.0.2:8000", "http://d:1", "http://p:1"]
    assert fleet.policy is not None
    assert [p.endpoints for p in fleet.policy.pools] == [("http://10.9.0.1:8000",), ()]
    raw = {"version": 1, "prefillPools": [{"name": "x", "linkBudgetGbps": 1, "discovered": True}]}
    assert RoutingPolicy.from_status(raw).pools[0].discovered


def test_loopback_names_are_checked_where_they_connect() -> None:
    fleet = Fleet(resolve_localhost=True, allow=Allowlist(["127.0.0.1/32"]))
    bad = fleet.apply(RoutingPolicy(1, None, (), ("http://e.localhost:1",), ("http://d:2",)))
    assert bad == [("http://d:2", "not_allowed")]
    assert fleet.policy is not None and fleet.policy.prefill_endpoints == ("http://127.0.0.1:1",)


def test_the_default_limits_never_bite_the_case_study() -> None:
    """Prompts up to 131,072 tokens and 1,024 output tokens (the case study's traffic), and
    the command's defaults are the same as ``Limits()``."""
    lim = Limits()
    assert lim.max_prompt_tokens >= 131_072 and lim.max_tokens >= 1_024
    parser = argparse.ArgumentParser()
    router_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["router", "--policy-file", "p.json"])
    assert (args.max_tokens_limit, args.max_prompt_tokens, args.max_concurrency,
            args.max_json_depth, args.idle_timeout, args.body_timeout) == (
        lim.max_tokens, lim.max_prompt_tokens, lim.max_concurrency, lim.max_json_depth,
        lim.idle_timeout_s, lim.body_timeout_s)  # fmt: skip
    assert args.api_key_file is None and args.admin_port is None and args.allow_endpoint == []
    json.dumps(vars(args), default=str)  # plain values only

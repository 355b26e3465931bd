"""The P/D hand-off per group: the policy declares it, the router builds its requests by it."""

from __future__ import annotations

import pytest

from prfaas.api.common import Handoff as HandoffSpec
from prfaas.router import handoff
from prfaas.routing.policy import SGLANG_BOOTSTRAP_PORT, Handoff, PolicyError, RoutingPolicy


def test_the_policy_declares_each_groups_protocol_default_vllm() -> None:
    p = RoutingPolicy.from_status(
        {
            "prefillHandoff": {"protocol": "sglang", "bootstrapPort": 9001},
            "prefillPools": [
                {"name": "a", "handoff": {"protocol": "sglang"}},
                {"name": "b"},
            ],
        }
    )
    assert p.prefill_handoff == Handoff("sglang", 9001)
    assert p.pools[0].handoff == Handoff("sglang", SGLANG_BOOTSTRAP_PORT)
    assert p.pools[1].handoff == Handoff() and not p.pools[1].handoff.sglang


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"protocol": "nixl"}, "prefillHandoff.protocol"),
        ({"protocol": "sglang", "bootstrapPort": 0}, "prefillHandoff.bootstrapPort"),
        ({"protocol": "sglang", "bootstrapPort": True}, "prefillHandoff.bootstrapPort"),
        ("sglang", "prefillHandoff"),
    ],
)
def test_a_bad_handoff_names_its_field(raw: object, where: str) -> None:
    with pytest.raises(PolicyError, match=where):
        RoutingPolicy.from_status({"prefillHandoff": raw})


def test_the_crd_allows_a_bootstrap_port_only_for_sglang() -> None:
    assert HandoffSpec(protocol="sglang", bootstrap_port=9001).bootstrap_port == 9001
    with pytest.raises(ValueError, match="bootstrapPort is for protocol sglang only"):
        HandoffSpec(protocol="vllm", bootstrap_port=9001)


def test_vllm_prefill_is_phase_one_and_decode_gets_what_it_returned() -> None:
    body = {"prompt": "x", "max_tokens": 50, "stream": True, "stream_options": {"a": 1}}
    req = handoff.prefill_body(body, None)
    assert req == {"prompt": "x", "max_tokens": 1, "stream": False,
                   "kv_transfer_params": {"do_remote_decode": True}}  # fmt: skip
    got = handoff.after_prefill(
        {"kv_transfer_params": {"transfer_id": "k", "prfaas_kv_bytes": 9}}, None
    )
    assert handoff.kv_bytes(got) == 9
    assert handoff.decode_fields(got, None) == {"kv_transfer_params": got}
    assert handoff.decode_fields({}, None) == {}


def test_sglang_sends_the_same_body_to_both_with_one_room() -> None:
    how = Handoff("sglang", 9001)
    pairing = handoff.pairing("http://10.0.0.7:8000", how)
    assert pairing is not None
    assert pairing["bootstrap_host"] == "10.0.0.7" and pairing["bootstrap_port"] == 9001
    assert 0 <= pairing["bootstrap_room"] < 2**63
    other = handoff.pairing("http://10.0.0.7:8000", how)
    assert other is not None and other["bootstrap_room"] != pairing["bootstrap_room"]
    body = {"prompt": "x", "max_tokens": 50, "stream": True}
    req = handoff.prefill_body(body, pairing)
    assert req == {**body, **pairing, "stream": False}  # max_tokens unchanged, as SGLang sends
    assert handoff.decode_fields({}, pairing) == pairing
    assert handoff.kv_bytes(handoff.after_prefill({"prfaas_kv_bytes": 7}, pairing)) == 7
    assert handoff.kv_bytes(handoff.after_prefill({}, pairing)) == 0  # real SGLang: none
    assert handoff.pairing("http://h:1", Handoff()) is None

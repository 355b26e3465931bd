"""The operator writes status as a JSON merge patch that removes what became empty: patching the
new status alone kept such fields, and a routing policy that stopped offloading kept its old
threshold in status, so every pass saw a changed policy and bumped its version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prfaas.api.pdcluster import PDClusterStatus, RoutingPolicyStatus
from prfaas.controller.reconcile import merge_patch


def apply(doc: dict[str, object], patch: dict[str, object]) -> dict[str, object]:
    """RFC 7386, as the API server applies it."""
    out = dict(doc)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = apply(out[key], value)  # type: ignore[arg-type]
        else:
            out[key] = value
    return out


def dump(s: PDClusterStatus) -> dict[str, object]:
    return s.model_dump(by_alias=True, exclude_none=True, mode="json")


def test_what_became_empty_is_removed_and_the_rest_written() -> None:
    policy = RoutingPolicyStatus(version=3, threshold_tokens=17_700, prefill_endpoints=["a"])
    offloading = PDClusterStatus(phase="Applied", routing_policy=policy)
    local_only = PDClusterStatus(
        phase="Degraded",
        routing_policy=RoutingPolicyStatus(version=4, prefill_endpoints=["a"]),
    )
    stored = dump(offloading)
    patch = merge_patch(stored, dump(local_only))
    assert patch["routingPolicy"] == {  # type: ignore[comparator-overlap]
        "version": 4, "thresholdTokens": None, "prefillPools": [],
        "prefillEndpoints": ["a"], "decodeEndpoints": [],
    }  # fmt: skip
    after = PDClusterStatus.model_validate(apply(stored, patch))
    assert after == local_only  # without the nulls: thresholdTokens 17,700 stays behind
    without = PDClusterStatus.model_validate(apply(stored, dump(local_only)))
    assert without.routing_policy is not None and without.routing_policy.threshold_tokens == 17_700


def test_a_pending_threshold_is_cleared_when_it_goes() -> None:
    at = (datetime(2026, 11, 30, tzinfo=UTC) + timedelta(seconds=1)).isoformat()
    stored = {"phase": "Applied", "pendingThreshold": {"tokens": 21_000, "since": at}}
    assert merge_patch(stored, {"phase": "Applied"}) == {"phase": "Applied",
                                                         "pendingThreshold": None}  # fmt: skip
    assert merge_patch(None, {"phase": "Applied"}) == {"phase": "Applied"}

"""Property tests (Hypothesis) of CR validation: the samples' PDCluster and PrefillPool specs
with one to three random edits (a leaf replaced by a value of any JSON type, a field deleted,
an unknown field added), each validated by the pydantic models (what the operator and the CLI
run) and by the real API server (server-side dry-run create, with the CRDs' OpenAPI schema and
CEL rules), which must agree: whatever the API server stores, the operator can read (else a
tenant could write a CR that breaks every pass), and what pydantic refuses is a
``ValidationError``, never another exception. Unknown fields and nulls are a planned
difference: pydantic refuses them in a file, the API server prunes them (what it stores, which
pydantic must take, has none).
Derandomised and bounded (``EXAMPLES`` per kind); a summary line says what was tried (``-s``
shows it).

One way is allowed to differ, and is counted: pydantic's lax mode accepts numbers written as
strings (``"5"``) and whole floats for integers (``5.0``), which the API server refuses.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from prfaas.api.pdcluster import PDClusterSpec
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.api.resource import GROUP, VERSION
from prfaas.discovery.watch import api_client
from prfaas_dev.cluster import ControlPlane
from prfaas_dev.kubectl import kubectl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
NS = "cr-fuzz"
EXAMPLES = 120
KINDS = {
    "PDCluster": ("pdclusters", "pdcluster-h20.yaml", PDClusterSpec),
    "PrefillPool": ("prefillpools", "prefillpool-h200.yaml", PrefillPoolSpec),
}

Path_ = tuple[str | int, ...]


def leaves(node: Any, at: Path_ = ()) -> Iterator[Path_]:
    """Every path in ``node``: containers and scalars alike."""
    if at:
        yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, (*at, i))


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0, -1, 1, 2**31, 2**53 + 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["", "5", "1e3", "http://10.0.0.1:8000", "Observe", "Auto", "x" * 300]),
    st.lists(st.integers(min_value=-2, max_value=10), max_size=3),
    st.dictionaries(st.sampled_from(["min", "max", "name", "url", "x"]), st.integers(), max_size=2),
)


def near(old: Any) -> st.SearchStrategy[Any]:
    if isinstance(old, bool):
        return st.booleans()
    if isinstance(old, int):
        return st.integers(min_value=-1, max_value=2 * abs(old) + 2)
    if isinstance(old, float):
        return st.floats(min_value=-0.5, max_value=2 * abs(old) + 1)
    if isinstance(old, str):
        return st.sampled_from([old, old.upper(), f"{old}-2", ""]) | st.from_regex(
            r"[a-z][a-z0-9-]{0,20}", fullmatch=True
        )
    return values


@st.composite
def edited(draw: st.DrawFn, spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    out = copy.deepcopy(spec)
    done: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = list(leaves(out))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = out
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        action = draw(st.sampled_from(["nudge", "nudge", "nudge", "set", "set", "delete",
                                       "unknown"]))  # fmt: skip
        if action == "nudge":  # a value of the same type and near the old one: often valid
            parent[last] = draw(near(parent[last]))
        elif action == "delete" and isinstance(parent, dict):
            del parent[last]
        elif action == "unknown" and isinstance(parent, dict):
            parent["bogusField"] = draw(values)
        else:
            parent[last] = draw(values)
        done.append(f"{action} {'.'.join(map(str, path))}")
    return out, done


def lax_only(errors: str) -> bool:
    """The API server's refusal is one pydantic's lax mode would have coerced."""
    return "Invalid value" in errors and ("string" in errors or "integer" in errors)


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Any:
    kc = control_plane.kubeconfig
    kubectl(kc, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(kc, "create", "namespace", NS, check=False)
    from kubernetes import client

    return client.CustomObjectsApi(api_client(str(kc)))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pydantic_and_the_api_server_agree(api: Any, kind: str) -> None:
    from kubernetes.client.exceptions import ApiException

    plural, sample, model = KINDS[kind]
    doc = yaml.safe_load((SAMPLES / sample).read_text(encoding="utf-8"))
    tally: Counter[str] = Counter()
    lax: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(edit=edited(doc["spec"]))
    def prop(edit: tuple[dict[str, Any], list[str]]) -> None:
        spec, what = edit
        try:
            model.model_validate(spec)
            ours = True
        except ValidationError:
            ours = False
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                "metadata": {"name": "fuzz"}, "spec": spec}  # fmt: skip
        try:
            stored = api.create_namespaced_custom_object(
                GROUP, VERSION, NS, plural, body, dry_run="All"
            )
        except ApiException as exc:
            assert exc.status in (400, 422), (exc.status, what, exc.body)
            stored, errors = None, str(exc.body)
        server = stored is not None
        tally[
            f"pydantic {'ok' if ours else 'refused'}, server {'ok' if server else 'refused'}"
        ] += 1
        if server:  # what the API server stores (unknown fields and nulls pruned), the
            model.model_validate(stored["spec"])  # operator reads: a stricter pydantic fails here
        elif ours:
            assert lax_only(errors), f"pydantic took what the API server refuses: {what}: {errors}"
            lax.append("; ".join(what))

    prop()
    print(f"\nfuzz {kind}: {sum(tally.values())} specs, {dict(tally)}")
    assert sum(tally.values()) >= EXAMPLES // 2
    assert tally["pydantic refused, server refused"] > 0 and tally["pydantic ok, server ok"] > 0

"""Property tests (Hypothesis) of a real ``prfaas router`` process on real engines: whatever a
client sends to the OpenAI routes or the decision API, the router answers it without a 5xx,
every non-2xx is an OpenAI-style JSON error, and ``prfaas_router_errors_total`` counts every one.

Bodies are drawn from three shapes: requests close to the OpenAI schema with wrong types and
values mixed in (prompt, messages, max_tokens, stream, stream_options, model, extra fields),
arbitrary JSON (up to 1,000 deep: past the depth limit and the 254 levels orjson can write
back), and raw bytes. Examples are derandomised (the same each run, so CI is stable) and
bounded: ``EXAMPLES`` per property, each sent over HTTP. A summary line says what was tried
(``-s`` shows it).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prfaas_dev.http import scrape
from prfaas_dev.stack import Service, Stack

pytestmark = pytest.mark.integration

EXAMPLES = 300
PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/route")
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp("router-fuzz")
    with Stack(logs) as stack:
        local = stack.engine("prefill", "h20", 200.0)
        decode = stack.engine("decode", "h20", 200.0)
        policy = logs / "policy.json"
        policy.write_text(json.dumps({"version": 1, "thresholdTokens": None,
                                      "prefillEndpoints": [local.url],
                                      "decodeEndpoints": [decode.url]}))  # fmt: skip
        # max_tokens up to 16 (a fuzzed request is answered in ms); the other limits default
        yield stack.router(["--policy-file", str(policy), "--max-tokens-limit", "16"], "router")


class Tally:
    """What was sent and how it was answered, per property."""

    def __init__(self, router: Service) -> None:
        self.router = router
        self.statuses: Counter[int] = Counter()
        self.codes: Counter[str] = Counter()
        self.errors_before = self.errors()

    def errors(self) -> float:
        m = scrape(self.router.url + "/metrics")
        return sum(v for k, v in m.items() if k.startswith("prfaas_router_errors_total"))

    def send(self, path: str, data: bytes) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.router.port, timeout=30)
        conn.request("POST", path, data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        self.statuses[r.status] += 1
        assert r.status < 500, (r.status, path, data[:300], raw[:300])
        if r.status >= 300:
            body = json.loads(raw)
            err = body["error"]
            assert {type(err[k]) for k in ("message", "type", "code")} == {str}, body
            self.codes[err["code"]] += 1

    def check(self, name: str) -> None:
        sent = sum(self.statuses.values())
        non_2xx = sum(n for s, n in self.statuses.items() if s >= 300)
        counted = self.errors() - self.errors_before
        print(
            f"\nfuzz {name}: {sent} requests, statuses {dict(sorted(self.statuses.items()))}, "
            f"error codes {dict(self.codes.most_common())}, errors_total +{counted:g}"
        )
        assert sent >= EXAMPLES // 2, "Hypothesis ran too few examples"
        assert counted == non_2xx


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
any_json = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=30,
)
token_ids = st.lists(st.integers(min_value=-5, max_value=2**40), max_size=40)
prompts = st.one_of(
    st.text(max_size=200),
    token_ids,
    st.lists(st.text(max_size=20), max_size=3),
    st.lists(token_ids, max_size=3),
    any_json,
)
content = st.one_of(
    st.text(max_size=100),
    st.none(),
    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30)})),
    any_json,
)
messages = st.one_of(
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system"]), "content": content}
            ),
            any_json,
        ),
        max_size=4,
    ),
    any_json,
)
counts = st.one_of(st.integers(min_value=-3, max_value=40), st.integers(), any_json)
FIELDS = {
    "model": st.one_of(st.just("sim-model"), any_json),
    "prompt": prompts,
    "messages": messages,
    "max_tokens": counts,
    "max_completion_tokens": counts,
    "stream": st.one_of(st.booleans(), any_json),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": any_json}), any_json),
    "temperature": any_json,
    "kv_transfer_params": any_json,
}
_OPTIONS = {
    "model": st.just("sim-model"),
    "max_tokens": st.integers(min_value=1, max_value=20),  # over 16: past the limit
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
}
valid = st.one_of(
    st.fixed_dictionaries(
        {"prompt": st.one_of(st.text(min_size=1, max_size=400),
                             st.lists(st.integers(0, 2**31), min_size=1, max_size=60))},
        optional=_OPTIONS,
    ),
    st.fixed_dictionaries(
        {"messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]),
                                                     "content": st.text(max_size=100)}),
                              min_size=1, max_size=3)},
        optional=_OPTIONS,
    ),
)  # fmt: skip


def _mutate(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``body`` itself, or with one field set to something drawn from that field's wide range."""
    one = st.sampled_from(sorted(FIELDS)).flatmap(lambda k: FIELDS[k].map(lambda v: {**body, k: v}))
    return st.one_of(st.just(body), one)


openai_like = st.one_of(valid.flatmap(_mutate), st.fixed_dictionaries({}, optional=FIELDS))


def deep(depth: int) -> bytes:
    return b'{"prompt": [1], "x": ' + b"[" * depth + b"]" * depth + b"}"


def test_openai_shaped_requests(router: Service) -> None:
    tally = Tally(router)

    @FUZZ
    @given(path=st.sampled_from(PATHS), body=openai_like)
    def prop(path: str, body: dict[str, Any]) -> None:
        tally.send(path, json.dumps(body).encode())

    prop()
    tally.check("openai-shaped")


def test_arbitrary_json_and_bytes(router: Service) -> None:
    tally = Tally(router)

    @FUZZ
    @given(
        path=st.sampled_from(PATHS),
        data=st.one_of(
            any_json.map(lambda v: json.dumps(v).encode()),
            st.integers(min_value=1, max_value=1000).map(deep),
            st.binary(max_size=300),
        ),
    )
    def prop(path: str, data: bytes) -> None:
        tally.send(path, data)

    prop()
    tally.check("arbitrary")


_BODY = b'{"prompt": [1, 2, 3], "max_tokens": 2}'
_REQUEST = (
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%b" % (len(_BODY), _BODY)
)
_PIECES = [b"\r\n", b"\r\n\r\n", b": ", b" ", b"HTTP/1.0", b"HTTP/1.1", b"GET ", b"POST ",
           b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n", b"Content-Length: -1\r\n",
           b"Connection: close\r\n", b"Expect: 100-continue\r\n", b"0\r\n\r\n", b"\x00", b"\xff",
           b"Upgrade: h2c\r\nConnection: Upgrade\r\n", b"/v1/chat/completions", b"%00"]  # fmt: skip


@st.composite
def raw_http(draw: st.DrawFn) -> bytes:
    """A valid request (or two, pipelined) with pieces of HTTP cut, replaced or inserted."""
    data = bytearray(_REQUEST * draw(st.integers(1, 2)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["cut", "insert", "byte"]))
        if op == "cut":
            del data[at : at + draw(st.integers(1, 20))]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(_PIECES) | st.binary(min_size=1, max_size=8))
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


def test_raw_http(router: Service) -> None:
    """Bytes on the socket itself, from broken HTTP to valid requests: every answer is HTTP with
    a status under 500 (none from a crash), the router's log holds no traceback, and it serves
    a normal request after all of it."""
    statuses: Counter[int] = Counter()
    closed = 0

    @FUZZ
    @given(data=st.one_of(raw_http(), st.binary(max_size=200)))
    def prop(data: bytes) -> None:
        nonlocal closed
        sock = socket.create_connection(("127.0.0.1", router.port))
        sock.settimeout(0.25)
        got = b""
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                got += chunk
            closed += 1
        except TimeoutError:
            pass  # waiting for more of a request: what a server does with a partial one
        except OSError:
            closed += 1  # reset while sending
        finally:
            sock.close()
        for status in re.findall(rb"(?:^|\r\n\r\n)HTTP/1\.1 (\d{3}) ", got):
            statuses[int(status)] += 1
            assert int(status) < 500, (data, got[:400])
        assert not got or got.startswith(b"HTTP/1.1 "), (data, got[:400])

    prop()
    print(f"\nfuzz raw HTTP: statuses {dict(sorted(statuses.items()))}, closed by the router "
          f"{closed}")  # fmt: skip
    assert sum(statuses.values()) >= EXAMPLES // 4  # most inputs were HTTP enough to answer
    assert scrape(router.url + "/metrics")  # still serving
    assert "Traceback" not in router.proc.log.read_text(errors="replace")

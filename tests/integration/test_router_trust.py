"""The router's trust boundaries on a real ``prfaas router`` process over real sockets: what a
client (or anyone who can connect) can make it do, and where a policy can make it send prompts.

One local prefill and one decode engine (the case study's timing / 20) behind routers with
small limits, so each boundary is reached in a test's time: max_tokens, prompt length, JSON
depth, requests in flight, slow or idle connections, API keys, the endpoint allowlist, and the
engine URLs kept off the client port. Each test fails without its boundary.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prfaas_dev.http import http_get, scrape
from prfaas_dev.ports import free_port
from prfaas_dev.stack import Engine, Service, Stack

pytestmark = pytest.mark.integration

SPEEDUP = 20.0
MODEL = "sim-model"
IDLE_S = 2.0
BODY_S = 8.0
LIMITS = [
    "--max-tokens-limit", "64",
    "--max-prompt-tokens", "4096",
    "--max-concurrency", "4",
    "--max-json-depth", "16",
    "--idle-timeout", str(IDLE_S),
    "--body-timeout", str(BODY_S),
]  # fmt: skip


@dataclass
class Setup:
    stack: Stack
    local: Engine
    decode: Engine
    router: Service
    logs: Path

    def policy_file(self, name: str, **extra: Any) -> Path:
        doc: dict[str, Any] = {
            "version": 1,
            "thresholdTokens": None,
            "prefillEndpoints": [self.local.url],
            "decodeEndpoints": [self.decode.url],
        }
        doc.update(extra)
        path = self.logs / f"{name}.policy.json"
        path.write_text(json.dumps(doc))
        return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    logs = tmp_path_factory.mktemp("router-trust")
    with Stack(logs) as stack:
        local = stack.engine("prefill", "h20", SPEEDUP)
        decode = stack.engine("decode", "h20", SPEEDUP)
        s = Setup(stack, local, decode, None, logs)  # type: ignore[arg-type]
        argv = ["--policy-file", str(s.policy_file("main")), "--log-format", "plain"]
        s.router = stack.router([*argv, "--scrape-interval", "0.2", *LIMITS], "router")
        yield s


def post(
    url: str, body: Any, path: str = "/v1/completions", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    try:
        return r.status, hdrs, json.loads(raw)
    except ValueError:
        return r.status, hdrs, raw


def errors(router: Service, code: str) -> float:
    return scrape(router.url + "/metrics").get(f'prfaas_router_errors_total{{code="{code}"}}', 0.0)


def generated(engine: Engine) -> float:
    m = scrape(engine.url + "/metrics")
    return sum(v for k, v in m.items() if k.startswith("vllm:generation_tokens_total"))


def assert_openai_error(status: int, body: Any, want_status: int, code: str) -> None:
    assert status == want_status, body
    assert isinstance(body, dict) and set(body["error"]) >= {"message", "type", "code"}, body
    assert body["error"]["code"] == code, body


def test_the_client_port_never_names_an_engine(setup: Setup) -> None:
    r = setup.router
    engines = [f"127.0.0.1:{e.port}" for e in (setup.local, setup.decode)]
    status, _, body = post(r.url, {"model": MODEL, "prompt": [1, 2, 3]}, "/v1/route")
    assert status == 200 and body["target"] == "local"
    seen = [json.dumps(body), http_get(r.url + "/readyz")[1].decode()]
    status, policy = http_get(r.url + "/policy")
    assert status == 404
    seen.append(policy.decode(errors="replace"))
    assert not [e for e in engines if any(e in text for text in seen)]
    # the admin port (loopback) has them
    status, _, body = post(str(r.admin_url), {"prompt": [1, 2, 3]}, "/v1/route")
    assert status == 200 and body["prefill"] == setup.local.url
    assert body["decode"] == setup.decode.url
    assert setup.decode.url in json.loads(http_get(f"{r.admin_url}/policy")[1])["engines"]


def test_max_tokens_over_the_limit_never_reaches_an_engine(setup: Setup) -> None:
    r = setup.router
    before, errs = generated(setup.decode), errors(r, "max_tokens_too_large")
    for key in ("max_tokens", "max_completion_tokens"):
        status, _, body = post(r.url, {"model": MODEL, "prompt": [5, 6], key: 10**8})
        assert_openai_error(status, body, 400, "max_tokens_too_large")
    status, _, body = post(r.url, {"messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": 65}, "/v1/chat/completions")  # fmt: skip
    assert_openai_error(status, body, 400, "max_tokens_too_large")
    assert errors(r, "max_tokens_too_large") == errs + 3
    assert generated(setup.decode) == before  # nothing was generated for them
    status, _, body = post(r.url, {"model": MODEL, "prompt": [5, 6], "max_tokens": 64})
    assert status == 200 and body["usage"]["completion_tokens"] == 64  # the limit itself: fine


def test_a_prompt_over_the_limit_is_refused(setup: Setup) -> None:
    r = setup.router
    errs = errors(r, "prompt_too_long")
    status, _, body = post(r.url, {"prompt": list(range(4097)), "max_tokens": 1})
    assert_openai_error(status, body, 400, "prompt_too_long")
    status, _, body = post(r.url, {"prompt": "x" * (4 * 4097), "max_tokens": 1})  # ~4 B/token
    assert_openai_error(status, body, 400, "prompt_too_long")
    assert errors(r, "prompt_too_long") == errs + 2
    status, _, _ = post(r.url, {"prompt": list(range(10**6, 10**6 + 4096)), "max_tokens": 1})
    assert status == 200


def nested(depth: int) -> bytes:
    return b'{"prompt": [1, 2], "max_tokens": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [16, 300, 1000])
def test_deep_json_is_a_counted_400(setup: Setup, depth: int) -> None:
    """Without the limit, 254 to 1023 levels were a 500 (the engine request could not be
    serialised), not counted."""
    r = setup.router
    errs = errors(r, "json_too_deep")
    status, _, body = post(r.url, nested(depth))  # the object itself is one more level
    assert_openai_error(status, body, 400, "json_too_deep")
    assert errors(r, "json_too_deep") == errs + 1
    assert post(r.url, nested(15))[0] == 200


class Partial:
    """A request whose body never finishes: it holds a slot until the body timeout."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        body = json.dumps({"prompt": [7, 8], "max_tokens": 1}).encode()
        self.rest = body[10:]
        head = (
            f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + body[:10])

    def finish(self) -> bytes:
        self.sock.sendall(self.rest)
        self.sock.settimeout(30)
        return self.sock.recv(65536)


def wait_for(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_requests_over_the_concurrency_cap_get_429_with_retry_after(setup: Setup) -> None:
    r = setup.router

    def in_flight() -> float:
        return scrape(r.url + "/metrics")["prfaas_router_requests_in_flight"]

    wait_for(lambda: in_flight() == 0, 10, "requests of earlier tests still in flight")
    errs = errors(r, "too_many_requests")
    held = [Partial(r.port) for _ in range(4)]
    try:
        wait_for(lambda: in_flight() == 4, 5, "the 4 partial requests are not in flight")
        status, headers, body = post(r.url, {"prompt": [1], "max_tokens": 1})
        assert_openai_error(status, body, 429, "too_many_requests")
        assert headers["retry-after"] == "1"
        assert errors(r, "too_many_requests") == errs + 1
        assert held[0].finish().startswith(b"HTTP/1.1 200")  # one leaves: room for one
        wait_for(lambda: in_flight() == 3, 5, "the finished request still counted")
        assert post(r.url, {"prompt": [1], "max_tokens": 1})[0] == 200
    finally:
        for p in held:
            p.sock.close()


def closed_within(sock: socket.socket, timeout: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` (sending ``trickle`` a byte every 0.2 s
    meanwhile), or ``timeout`` if it has not by then."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    i = 0
    while time.monotonic() - t0 < timeout:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            pass
        except OSError:  # reset
            return time.monotonic() - t0
        if i < len(trickle):
            try:
                sock.send(trickle[i : i + 1])
            except OSError:
                return time.monotonic() - t0
            i += 1
    return timeout


def test_a_slowloris_head_is_closed_within_the_idle_timeout(setup: Setup) -> None:
    """One byte of a never-ending header every 0.2 s: closed within --idle-timeout of
    connecting (aiohttp's default keeps it an hour)."""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    took = closed_within(sock, IDLE_S + 3, b"X-Slow: " + b"a" * 200)
    sock.close()
    assert took < IDLE_S + 2.5, f"still open after {took:.1f} s"


def test_a_slow_body_gets_408_within_the_body_timeout(setup: Setup) -> None:
    r = setup.router
    errs = errors(r, "body_timeout")
    sock = socket.create_connection(("127.0.0.1", r.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
    sock.settimeout(0.2)
    t0, answer = time.monotonic(), b""
    while time.monotonic() - t0 < BODY_S + 5 and not answer:
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            sock.send(b" ")  # one byte at a time, never the whole body
    took = time.monotonic() - t0
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert took < BODY_S + 2.5
    assert errors(r, "body_timeout") == errs + 1


def test_a_refused_body_is_not_read_past_the_idle_timeout(setup: Setup) -> None:
    """A body announced at 100 GB: 413 at once; the router reads and drops what follows (so a
    client that sends before it reads still gets the answer), but for --idle-timeout at most."""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                 % (100 << 30))  # fmt: skip
    sock.settimeout(5)
    answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    t0, chunk = time.monotonic(), b" " * (1 << 16)
    sock.settimeout(0.5)
    while time.monotonic() - t0 < IDLE_S + 5:
        try:
            sock.send(chunk)
        except TimeoutError:
            continue
        except OSError:  # reset: the router closed it
            break
    took = time.monotonic() - t0
    sock.close()
    assert took < IDLE_S + 2.5, f"still reading after {took:.1f} s"


def test_idle_connections_are_closed(setup: Setup) -> None:
    """200 connections that never send a byte (or stay idle after an answer) are all closed
    within --idle-timeout."""
    socks = [socket.create_connection(("127.0.0.1", setup.router.port)) for _ in range(200)]
    used = http.client.HTTPConnection("127.0.0.1", setup.router.port, timeout=10)
    used.request("GET", "/healthz")
    assert used.getresponse().read() == b"OK"
    time.sleep(IDLE_S + 1.5)
    still = 0
    for s in [*socks, used.sock]:
        s.setblocking(False)
        try:
            still += s.recv(1) != b""
        except BlockingIOError:
            still += 1  # nothing to read, not closed
        except OSError:
            pass
        s.close()
    assert still == 0, f"{still} of 201 idle connections still open"


def test_api_keys_when_set(setup: Setup) -> None:
    keys = setup.logs / "keys"
    keys.write_text("first-key-123\n\n  second-key-456  \n")
    argv = ["--policy-file", str(setup.policy_file("keys")), "--api-key-file", str(keys)]
    r = setup.stack.router([*argv, "--log-format", "plain", "-v"], "router-keys")
    body = {"prompt": [1, 2], "max_tokens": 1}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "first-key-123"}):
        status, _, answer = post(r.url, body, headers=headers)
        assert_openai_error(status, answer, 401, "invalid_api_key")
        status, _, answer = post(r.url, body, "/v1/route", headers=headers)
        assert_openai_error(status, answer, 401, "invalid_api_key")
    for key in ("first-key-123", "second-key-456"):
        ok = {"Authorization": f"Bearer {key}"}
        assert post(r.url, body, headers=ok)[0] == 200
        assert post(r.url, {"messages": [{"role": "user", "content": "hi"}]},
                    "/v1/chat/completions", headers=ok)[0] == 200  # fmt: skip
    assert errors(r, "invalid_api_key") == 6
    for path in ("/healthz", "/readyz", "/metrics"):  # probes and scrapes stay open
        assert http_get(r.url + path)[0] == 200
    keys.write_text("rotated-key-789\n")  # a rotated Secret: no restart

    def rotated() -> bool:
        return post(r.url, body, headers={"Authorization": "Bearer first-key-123"})[0] == 401

    wait_for(lambda: rotated() and post(r.url, body, headers={"Authorization": "Bearer "
             "rotated-key-789"})[0] == 200, 10, "the rotated key file was not re-read")  # fmt: skip
    log = r.proc.log.read_text()
    assert not [k for k in ("first-key", "second-key", "rotated-key") if k in log]


class Listener:
    """A TCP listener on loopback that counts the connections it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def test_a_declared_endpoint_outside_the_allowlist_is_never_contacted(setup: Setup) -> None:
    """The policy (a PDCluster author) declares a decode and a pool engine the platform did not
    allow: dropped, counted, and no connection ever reaches them (scrapes, probes, requests)."""
    rogue, rogue_pool = Listener(), Listener()
    policy = setup.policy_file(
        "allow",
        thresholdTokens=100,  # long prompts would go to the pool, if it were allowed
        decodeEndpoints=[setup.decode.url, f"http://127.0.0.1:{rogue.port}"],
        prefillPools=[{"name": "rogue", "endpoints": [f"http://127.0.0.1:{rogue_pool.port}"],
                       "linkBudgetGbps": 100}],
    )  # fmt: skip
    allow = [f"127.0.0.1:{setup.local.port}", f"http://127.0.0.1:{setup.decode.port}/"]
    argv = ["--policy-file", str(policy), "--scrape-interval", "0.2", "--log-format", "plain"]
    for a in allow:
        argv += ["--allow-endpoint", a]
    r = setup.stack.router(argv, "router-allow")
    for _ in range(6):  # every one lands on the allowed engines
        status, headers, _ = post(r.url, {"prompt": list(range(1, 500)), "max_tokens": 2})
        assert status == 200 and headers["x-prfaas-prefill"] == "local"
    time.sleep(1.0)  # five scrape intervals
    assert (rogue.accepted, rogue_pool.accepted) == (0, 0)
    m = scrape(r.url + "/metrics")
    assert m['prfaas_router_endpoints_refused{reason="not_allowed"}'] == 2
    assert "not in --allow-endpoint" in r.proc.log.read_text()
    # the same policy without the allowlist: the declared listeners are contacted
    plain = setup.stack.router(
        ["--policy-file", str(policy), "--scrape-interval", "0.2"], "router-open"
    )
    wait_for(lambda: rogue.accepted > 0, 5, "the open router never scraped the declared one")
    refused = scrape(plain.url + "/metrics")[
        'prfaas_router_endpoints_refused{reason="not_allowed"}'
    ]
    assert refused == 0


def test_flags_are_checked(setup: Setup) -> None:
    """Bad limits and allowlist entries are one-line errors at start-up."""
    import subprocess

    from prfaas_dev.procs import prfaas_argv

    policy = str(setup.policy_file("flags"))
    for bad, says in [
        (["--allow-endpoint", "ftp://x/"], "not an http(s) URL prefix"),
        (["--allow-endpoint", "a b"], "expected a CIDR"),
        (["--max-tokens-limit", "0"], "expected an integer >= 1"),
        (["--api-key-file", str(setup.logs / "missing")], "cannot read API key file"),
    ]:
        out = subprocess.run(
            [*prfaas_argv(), "router", "--policy-file", policy, "--port", str(free_port()), *bad],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode != 0 and says in out.stderr, out.stderr
        assert "Traceback" not in out.stderr

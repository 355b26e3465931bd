"""The router's own HTTP/1.1 server (``prfaas/router/front.py``) on a real ``prfaas router``
process, over raw sockets: what aiohttp's server did for us before and ours must do now.
Pipelined requests answered in order, ``Expect: 100-continue``, a body announced over the limit
refused before it is sent, a request head over the bound, malformed HTTP (after the answers
to the requests read before it), absolute-form targets, 404/405 in the OpenAI error shape,
streaming to an HTTP/1.0 client, idle connections holding no body, and in-flight requests
finishing when the router is stopped. (Keep-alive, the body and idle timeouts, and the body
limit on a body sent are in ``test_router_trust.py`` and ``test_router.py``.)
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prfaas_dev.stack import Engine, Service, Stack

pytestmark = pytest.mark.integration

MODEL = "sim-model"


@dataclass
class Setup:
    stack: Stack
    local: Engine
    router: Service  # a 1-MiB body limit


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Stack(tmp_path_factory.mktemp("router-front")) as stack:
        local = stack.engine("prefill", "h20", 20.0)
        decode = stack.engine("decode", "h20", 20.0)
        router = stack.prfaas_router([local], [decode], extra=["--max-body-mb", "1"])
        yield Setup(stack, local, router)


def request(path: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def completion(rid: str, stream: bool = False, tokens: int = 4) -> bytes:
    body = {"model": MODEL, "prompt": [1, 2, 3, 4], "max_tokens": tokens, "stream": stream}
    return request("/v1/completions", json.dumps(body).encode(), f"X-Request-ID: {rid}\r\n")


def read_all(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """Everything until the router closes the connection."""
    sock.settimeout(timeout)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Whole answers with a Content-Length, in the order they came."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        n = int(headers["content-length"])
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        raw = rest[n:]
    return out


def test_pipelined_requests_are_answered_in_order(setup: Setup) -> None:
    """Three requests in one write (the last asks to close): three answers, in order, each
    naming its own request ID."""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    last = completion("c").replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    sock.sendall(completion("a") + completion("b", tokens=1) + last)
    got = answers(read_all(sock))
    sock.close()
    assert [(s, h["x-request-id"]) for s, h, _ in got] == [(200, "a"), (200, "b"), (200, "c")]
    assert all(json.loads(b)["choices"][0]["text"] for _, _, b in got)


def test_expect_100_continue(setup: Setup) -> None:
    """A client that waits for ``100 Continue`` before the body (curl does above 1 KiB) gets it,
    then its answer."""
    body = json.dumps({"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 2}).encode()
    head = request("/v1/completions", b"", "Expect: 100-continue\r\nConnection: close\r\n")
    head = head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.settimeout(10)
    sock.sendall(head)
    assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    [(status, _, answer)] = answers(read_all(sock))
    sock.close()
    assert status == 200 and json.loads(answer)["usage"]["completion_tokens"] == 2


def test_a_body_announced_over_the_limit_is_refused_before_it_is_sent(setup: Setup) -> None:
    """Content-Length over --max-body-mb: 413 at once, nothing of the body sent. (A client that
    sends it anyway reads the same answer after: ``test_router.py``.)"""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    big = b"Content-Length: %d" % (2 << 20)
    sock.sendall(request("/v1/completions", b"").replace(b"Content-Length: 0", big))
    sock.settimeout(10)
    raw = b""
    while b"\r\n\r\n" not in raw or not raw.endswith(b"}"):
        raw += sock.recv(65536)
    sock.close()
    [(status, headers, body)] = answers(raw)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "body_too_large"


def test_a_request_head_over_64_kib_is_refused(setup: Setup) -> None:
    """A head of 100 headers of 1 KiB: 431, closed; the router goes on serving."""
    extra = "".join(f"X-Pad-{i}: {'a' * 1024}\r\n" for i in range(100))
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    with contextlib.suppress(OSError):  # closed while sending: the answer is still there
        sock.sendall(request("/v1/completions", b"{}", extra))
    [(status, _, body)] = answers(read_all(sock, 10))
    sock.close()
    assert status == 431 and json.loads(body)["error"]["code"] == "head_too_large"
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.sendall(completion("after").replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
    assert answers(read_all(sock))[0][0] == 200
    sock.close()


def test_malformed_http_gets_an_error_and_a_close(setup: Setup) -> None:
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
    [(status, _, body)] = answers(read_all(sock, 10))
    sock.close()
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_http"


def test_unknown_paths_and_methods_get_openai_errors(setup: Setup) -> None:
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.sendall(
        b"GET /v1/nope HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    (s1, _, b1), (s2, h2, b2) = answers(read_all(sock, 10))
    sock.close()
    assert (s1, json.loads(b1)["error"]["code"]) == (404, "not_found")
    assert (s2, json.loads(b2)["error"]["code"]) == (405, "method_not_allowed")
    assert h2["allow"] == "POST"


def test_an_absolute_form_target_is_routed_by_its_path(setup: Setup) -> None:
    """``POST http://host/v1/completions`` (what a client set to use the router as a proxy
    sends; a server must accept it, RFC 9112 3.2.2) is the route of its path."""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    absolute = completion("abs").replace(
        b"POST /v1/completions ", b"POST http://router.example:8000/v1/completions?x=1 "
    )
    sock.sendall(absolute.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
    [(status, headers, body)] = answers(read_all(sock))
    sock.close()
    assert (status, headers["x-request-id"]) == (200, "abs") and json.loads(body)["choices"]


def test_bad_bytes_after_pipelined_requests_are_refused_after_their_answers(
    setup: Setup,
) -> None:
    """Two requests, then bytes that are not HTTP, in one write: both are answered, in order,
    then the 400, then the close (the requests read before the bad bytes are not lost)."""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.sendall(completion("a") + completion("b") + b"NOT HTTP\r\n\r\n")
    got = answers(read_all(sock))
    sock.close()
    assert [(s, h.get("x-request-id")) for s, h, _ in got] == [(200, "a"), (200, "b"),
                                                               (400, None)]  # fmt: skip
    assert json.loads(got[2][2])["error"]["code"] == "bad_http"


def test_a_body_cut_by_bad_bytes_is_refused_at_once(setup: Setup) -> None:
    """A chunked body broken by a chunk size that is not hex, while its request is being
    answered (the handler waits for the body): 400 at once, not the body timeout's 408."""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    head = request("/v1/completions", b"").replace(
        b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n"
    )
    sock.sendall(head + b'5\r\n{"a":\r\n')
    time.sleep(0.3)  # the handler is waiting for the rest
    t0 = time.monotonic()
    sock.sendall(b"zz\r\n")
    [(status, _, body)] = answers(read_all(sock, 10))
    sock.close()
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_http"
    assert time.monotonic() - t0 < 2


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _one_answer(sock: socket.socket) -> int:
    """The status of one answer with a Content-Length, read whole; the connection stays open."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, rest = raw.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < n:
        rest += sock.recv(65536)
    return int(head.split()[1])


def test_idle_connections_keep_no_request_body(setup: Setup) -> None:
    """64 keep-alive connections each send a ~0.9-MiB request, read its answer and stay open:
    the router does not hold on to the bodies (~56 MiB) while they idle."""
    pid = setup.router.proc.pid
    body = json.dumps({"model": MODEL, "prompt": "x " * 450_000, "max_tokens": 1}).encode()
    before = _rss_mib(pid)
    socks = [socket.create_connection(("127.0.0.1", setup.router.port)) for _ in range(64)]
    try:
        for sock in socks:
            sock.settimeout(30)
            sock.sendall(request("/v1/completions", body))
            assert _one_answer(sock) < 500
        grown = _rss_mib(pid) - before
    finally:
        for sock in socks:
            sock.close()
    assert grown < 24, f"the router grew by {grown:.0f} MiB with 64 idle connections"


def test_an_upgrade_is_answered_then_closed(setup: Setup) -> None:
    """A request asking to switch protocols gets its answer, then the connection closes (what
    follows would not be HTTP/1.1), not a connection left waiting for the idle timeout."""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                 b"Upgrade: websocket\r\n\r\n")  # fmt: skip
    [(status, headers, body)] = answers(read_all(sock, 5))
    sock.close()
    assert (status, body, headers["connection"]) == (200, b"OK", "close")


def test_http_1_0_keep_alive(setup: Setup) -> None:
    """An HTTP/1.0 client that asks to keep the connection is told so, and can send again."""
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.settimeout(5)
    sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    raw = b""
    while not raw.endswith(b"OK"):
        raw += sock.recv(65536)
    [(status, headers, _)] = answers(raw)
    assert status == 200 and headers["connection"] == "keep-alive"
    sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")  # this one closes
    [(status, headers, body)] = answers(read_all(sock, 5))
    sock.close()
    assert (status, body, headers["connection"]) == (200, b"OK", "close")


def test_a_stream_to_an_http_1_0_client_ends_with_the_connection(setup: Setup) -> None:
    """No chunked encoding for HTTP/1.0: the events as they are, then the router closes."""
    body = json.dumps({"model": MODEL, "prompt": [1, 2], "max_tokens": 3, "stream": True})
    sock = socket.create_connection(("127.0.0.1", setup.router.port))
    sock.sendall(request("/v1/completions", body.encode(), version="1.0"))
    raw = read_all(sock)
    sock.close()
    head, _, events = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert events.startswith(b"data: {") and events.endswith(b"data: [DONE]\n\n")  # no chunks
    assert events.count(b"data: ") >= 4  # 3 tokens, [DONE]


def slow_router(s: Setup) -> Service:
    """A router of its own in front of a decode engine at full scale (~20 ms a token)."""
    return s.stack.prfaas_router([s.local], [s.stack.engine("decode", "h20", 1.0)])


def test_a_pipelined_request_is_not_read_before_its_turn(setup: Setup) -> None:
    """Behind a request being answered (~4 s), a pipelined one with a 64 MB body: the router
    reads no further than the kernel's buffers until the first is answered (else one
    connection could make it buffer, or read and drop, without bound)."""
    router = slow_router(setup)
    sock = socket.create_connection(("127.0.0.1", router.port))
    sock.sendall(completion("first", tokens=200))
    big = 64 << 20
    sock.sendall(
        request("/v1/completions", b"").replace(b"Content-Length: 0", b"Content-Length: %d" % big)
    )
    sock.settimeout(0.2)
    sent, chunk, t0 = 0, b" " * (1 << 16), time.monotonic()
    while sent < big and time.monotonic() - t0 < 3.0:
        with contextlib.suppress(TimeoutError):
            sent += sock.send(chunk)
    sock.close()
    print(f"\npipelined body accepted while the first request ran: {sent / 2**20:.1f} MiB")
    assert sent < 32 << 20


def test_requests_in_flight_finish_when_the_router_is_stopped(setup: Setup) -> None:
    """SIGTERM with a stream under way: it ends with [DONE], new connections are refused, the
    router exits."""
    router = slow_router(setup)
    sock = socket.create_connection(("127.0.0.1", router.port))
    sock.sendall(completion("slow", stream=True, tokens=48))
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_all(sock)))
    reader.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    router.proc.send_signal(signal.SIGTERM)
    reader.join(30)
    sock.close()
    assert got and got[0].endswith(b"\r\n0\r\n\r\n"), got  # the chunked stream's end
    assert b"data: [DONE]" in got[0]
    assert router.proc.popen is not None and router.proc.popen.wait(15) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", router.port), timeout=2)
    print(f"\nstream finished {time.monotonic() - t0:.2f} s after SIGTERM")

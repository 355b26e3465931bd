"""What a network peer can make ``prfaas engine`` and ``prfaas link`` do: real processes and
sockets on loopback only (the addresses a request names are loopback listeners of the test)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prfaas.engine.kv import KVServer, KVStore
from prfaas_dev.http import http_get, http_post_json
from prfaas_dev.ports import free_port
from prfaas_dev.procs import prfaas_argv
from prfaas_dev.stack import Stack

pytestmark = pytest.mark.integration
BANNER = b"SSH-2.0-OpenSSH_SECRETBANNER\r\n"


class BannerServer:
    """A loopback listener that is not a KV peer: it greets with a banner and counts visitors."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.visits = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.visits += 1
            with conn:
                conn.sendall(BANNER)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path / "logs") as s:
        yield s


def decode_with(url: str, host: str, port: int) -> tuple[int, dict[str, object]]:
    body = {
        "model": "sim-model",
        "prompt": [1, 2, 3],
        "max_tokens": 2,
        "kv_transfer_params": {
            "do_remote_prefill": True,
            "remote_host": host,
            "remote_port": port,
            "transfer_id": "made-up",
        },
    }
    status, raw = http_post_json(url + "/v1/completions", body, timeout=30)
    return status, json.loads(raw)


def test_decode_never_connects_to_a_kv_source_it_was_not_told_about(stack: Stack) -> None:
    banner = BannerServer()
    try:
        decode = stack.engine("decode", extra=["--kv-peer", "127.0.0.2"])
        status, body = decode_with(decode.url, "127.0.0.1", banner.port)
        assert status == 403 and "kv_peer_not_allowed" in json.dumps(body)
        time.sleep(0.5)
        assert banner.visits == 0
    finally:
        banner.close()


def test_decode_does_not_echo_what_a_non_kv_peer_says(stack: Stack) -> None:
    banner = BannerServer()
    try:
        decode = stack.engine("decode")  # loopback is allowed by default
        status, body = decode_with(decode.url, "127.0.0.1", banner.port)
        assert status == 502 and banner.visits == 1
        text = json.dumps(body)
        assert "not a KV peer" in text and "SECRETBANNER" not in text and "SSH" not in text
    finally:
        banner.close()


def test_an_unknown_fetch_is_answered_within_the_kv_timeout(stack: Stack) -> None:
    prefill = stack.engine("prefill", extra=["--kv-timeout", "1"])
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", prefill.kv_port), timeout=10) as s:
        s.sendall(b"FETCH never-put\n")
        answer = s.makefile("rb").readline()
    assert answer == b"ERR unknown key\n"
    assert time.monotonic() - start < 3


def test_waiting_fetches_are_capped() -> None:
    async def scenario() -> list[bytes]:
        server = KVServer(KVStore(), wait_s=5, max_waiting=2)
        port = free_port()
        await server.start("127.0.0.1", port)
        try:
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            for i, (_, w) in enumerate(conns):
                w.write(f"FETCH missing-{i}\n".encode())
                await w.drain()
                await asyncio.sleep(0.1)
            third = await asyncio.wait_for(conns[2][0].readline(), 2)
            for _, w in conns:
                w.close()
            return [third]
        finally:
            await server.stop()

    assert asyncio.run(scenario()) == [b"ERR busy\n"]


def test_flush_cache_is_an_opt_in_admin_endpoint(stack: Stack) -> None:
    plain = stack.engine("prefill")
    assert http_post_json(plain.url + "/flush_cache", {})[0] == 404
    admin = stack.engine("prefill", extra=["--admin"])
    assert http_post_json(admin.url + "/flush_cache", {})[0] == 200


def test_the_link_admin_api_listens_on_loopback_only(stack: Stack) -> None:
    # the relays on every interface (as in a pod), the admin API still on loopback only
    admin_port = free_port()
    argv = [*prfaas_argv(), "link", "--host", "0.0.0.0", "--admin-port", str(admin_port)]
    proc = stack.start("link", [*argv, "--route", f"{free_port()}=127.0.0.1:{free_port()}"])
    url = f"http://127.0.0.1:{admin_port}"
    proc.wait_ready(lambda: http_get(url + "/health")[0] == 200, 30)
    listening = {
        line.split()[1]
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        if Path(table).exists()
        for line in Path(table).read_text().splitlines()[1:]
        if line.split()[3] == "0A"  # LISTEN
    }
    port_hex = f"{admin_port:04X}"
    admin = [addr for addr in listening if addr.endswith(":" + port_hex)]
    assert admin == ["0100007F:" + port_hex]  # 127.0.0.1, not 0.0.0.0

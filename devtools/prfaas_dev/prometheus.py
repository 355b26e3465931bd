"""A real Prometheus (the distribution's package) for tests and the demo, on loopback only.

with LocalPrometheus(targets={"router": ["127.0.0.1:9400"]}) as prom:
    prom.url  # http://127.0.0.1:<port>
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from prfaas_dev.ports import free_port
from prfaas_dev.procs import Proc


class PrometheusError(RuntimeError):
    pass


def find_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise PrometheusError(
            "prometheus is not installed: `apt-get install prometheus` (Debian), or `make deps`"
        )
    return found


class LocalPrometheus:
    """Scrapes ``targets`` (job → host:port list) every ``scrape_interval``; stops on exit."""

    def __init__(
        self,
        targets: dict[str, list[str]],
        scrape_interval: str = "1s",
        port: int | None = None,
        labels: dict[str, dict[str, str]] | None = None,
    ) -> None:
        for hosts in targets.values():
            for host in hosts:
                if not host.startswith(("127.", "localhost:")):
                    raise PrometheusError(f"refusing a non-loopback target: {host}")
        self.targets = targets
        self.labels = labels or {}
        self.scrape_interval = scrape_interval
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir: Path | None = None
        self._proc: Proc | None = None

    def _config(self) -> dict[str, object]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "scrape_interval": self.scrape_interval,
                    "static_configs": [{"targets": hosts, "labels": self.labels.get(job, {})}],
                }
                for job, hosts in self.targets.items()
            ],
        }

    def start(self, timeout: float = 30.0) -> LocalPrometheus:
        binary = find_binary()
        self._dir = Path(tempfile.mkdtemp(prefix="prfaas-prometheus-"))
        config = self._dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config()), encoding="utf-8")
        self._proc = Proc.spawn(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--web.enable-lifecycle",
            ],
            self._dir / "prometheus.log",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise PrometheusError(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        tail = self.log_tail()  # before stop() removes the log
        self.stop()
        raise PrometheusError(f"prometheus not ready after {timeout:.0f} s: {tail}")

    def query(self, promql: str) -> list[dict[str, object]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            result: list[dict[str, object]] = json.load(resp)["data"]["result"]
        return result

    def wait_scraped(self, timeout: float = 30.0, scrapes: int = 2) -> None:
        """Block until every target was scraped ``scrapes`` times (series exist at zero)."""
        expected = sum(len(hosts) for hosts in self.targets.values())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            up = self.query(f"count_over_time(up[1m]) >= {scrapes}")
            if len(up) >= expected:
                return
            time.sleep(0.2)
        raise PrometheusError(f"targets not scraped within {timeout:.0f} s")

    def log_tail(self, lines: int = 15) -> str:
        return self._proc.tail(lines) if self._proc is not None else ""

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop(grace_s=10)
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

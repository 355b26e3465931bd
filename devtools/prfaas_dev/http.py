"""Small blocking HTTP helpers for probing and driving the processes we start."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether GET ``url`` answers 200 (any failure: no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post_json(url: str, body: Any, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(url: str) -> dict[str, float]:
    """Prometheus text at ``url`` as {'name{k="v",...}': value} (labels sorted)."""
    status, body = http_get(url, timeout=5)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status}")
    return scrape_text(body.decode())


def scrape_text(text: str) -> dict[str, float]:
    """Prometheus exposition text as {'name{k="v",...}': value} (labels sorted)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out

"""What the platform (operator flags), not a CR author, decides: where the operator may scale,
which Prometheus it may query, whether member kubeconfigs may run credential plugins.

A PDCluster's author has rights in its namespace only; the operator's ServiceAccount has more.
Without these checks the author could make the operator scale another namespace's Deployments
or send queries (and read answers) from any URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Trust:
    allow_kubeconfig_exec: bool = False
    target_namespaces: frozenset[str] = field(default_factory=frozenset)
    """Namespaces any CR may name in ``scaleTargetRef.namespace`` (besides its own)."""
    prometheus_urls: tuple[str, ...] = ()
    """Prometheus base URLs CRs may name in ``workload.prometheus.url``; empty: none."""
    max_plan_cells: int = 2_000_000
    """Most planning-grid cells one CR may cost per pass (~0.6 s and ~150 MB on one core)."""

    def target_refusal(self, cr_namespace: str, target_namespace: str | None) -> str | None:
        """Why a CR in ``cr_namespace`` may not scale in ``target_namespace`` (None: it may)."""
        if target_namespace in (None, cr_namespace) or target_namespace in self.target_namespaces:
            return None
        return (
            f"scaleTargetRef.namespace {target_namespace} is outside the PDCluster's namespace "
            f"and not in the operator's --allow-target-namespace list"
        )

    def prometheus_refusal(self, url: str) -> str | None:
        """Why ``url`` may not be queried (None: it may). A URL matches an allowed one with the
        same scheme and host:port and a path under the allowed path."""
        if any(_under(url, allowed) for allowed in self.prometheus_urls):
            return None
        if not self.prometheus_urls:
            return "the operator allows no Prometheus URL (--allow-prometheus)"
        return "workload.prometheus.url is not among the operator's --allow-prometheus URLs"


def _under(url: str, allowed: str) -> bool:
    u, a = urlsplit(url), urlsplit(allowed)
    if (u.scheme, u.netloc) != (a.scheme, a.netloc) or u.query or u.fragment or "@" in u.netloc:
        return False
    base = a.path.rstrip("/")
    return u.path.rstrip("/") == base or u.path.startswith(base + "/")

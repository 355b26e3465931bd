"""The API server's audit log as evidence of who wrote what, and when.

A control plane started with :func:`audit_args` logs every create/update/patch/delete of
Deployments (and their ``/scale``) and of the prfaas CRs (and their ``/status``), and every list
of the prfaas CRs, at Metadata level, one JSON event per line. :class:`AuditLog` reads them back:
counting writes per user over a time window is how the GitOps tests show that Flux and the
operator do not fight.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

WRITE_VERBS = {"create", "update", "patch", "delete"}
POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete]
    resources:
      - group: apps
        resources: [deployments, deployments/scale]
      - group: prfaas.io
        resources: [pdclusters, pdclusters/status, prefillpools, prefillpools/status]
      - group: rbac.authorization.k8s.io
        resources: [clusterroles]
  - level: Metadata
    verbs: [list]
    resources:
      - group: prfaas.io
        resources: [pdclusters, prefillpools]
  - level: None
"""


def audit_args(state_dir: Path) -> tuple[list[str], Path]:
    """kube-apiserver arguments for the policy above, and the log they write."""
    state_dir.mkdir(parents=True, exist_ok=True)
    policy = state_dir / "audit-policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    log = state_dir / "audit.log"
    args = [f"--audit-policy-file={policy}", f"--audit-log-path={log}", "--audit-log-maxsize=0"]
    return args, log


@dataclass(frozen=True)
class Write:
    at: float  # when the API server received it (epoch seconds)
    user: str
    verb: str
    resource: str  # e.g. deployments/scale, pdclusters/status
    namespace: str
    name: str
    dry_run: bool
    code: int

    @property
    def short_user(self) -> str:
        return self.user.rsplit(":", 1)[-1]


def _write(event: dict[str, Any]) -> Write:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
    return Write(
        at=stamp.timestamp(),
        user=(event.get("user") or {}).get("username", ""),
        verb=event.get("verb", ""),
        resource=resource,
        namespace=ref.get("namespace", ""),
        name=ref.get("name", ""),
        dry_run="dryRun=All" in event.get("requestURI", ""),
        code=int((event.get("responseStatus") or {}).get("code", 0)),
    )


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def writes(
        self,
        since: float = 0.0,
        until: float = float("inf"),
        *,
        user: str | None = None,
        names: tuple[str, ...] = (),
        resource: str | None = None,
        dry_run: bool | None = False,
        ok_only: bool = True,
    ) -> list[Write]:
        """Completed writes in ``[since, until)``: by ``user`` (a suffix of the username), to
        objects named ``names``, of ``resource`` (prefix: ``deployments`` includes its
        ``/scale``); ``dry_run=None`` counts both kinds; ``ok_only`` drops refused requests."""
        out = []
        for w in self._requests():
            if w.verb not in WRITE_VERBS:
                continue
            if not since <= w.at < until:
                continue
            if user is not None and not w.user.endswith(user):
                continue
            if names and w.name not in names:
                continue
            if resource is not None and not w.resource.startswith(resource):
                continue
            if dry_run is not None and w.dry_run != dry_run:
                continue
            if ok_only and not 200 <= w.code < 300:
                continue
            out.append(w)
        return out

    def lists(self, since: float, *, user: str) -> list[Write]:
        """List calls of the prfaas CRs by ``user`` since ``since`` (``namespace`` empty: across
        all namespaces, as a cluster-wide watch starts)."""
        return [w for w in self._requests() if w.verb == "list" and w.at >= since
                and w.user.endswith(user)]  # fmt: skip

    def _requests(self) -> Iterator[Write]:
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                event = json.loads(line)
                if event.get("stage") == "ResponseComplete":
                    yield _write(event)

    @staticmethod
    def summary(writes: list[Write]) -> str:
        """``user verb resource/name ×count`` lines, for assertion messages."""
        counts = Counter(
            f"{w.short_user} {w.verb}{' (dry-run)' if w.dry_run else ''} {w.resource}/{w.name}"
            for w in writes
        )
        return "\n".join(f"  {k} ×{n}" for k, n in sorted(counts.items())) or "  (none)"

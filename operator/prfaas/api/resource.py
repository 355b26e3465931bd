"""What the API server knows a kind by: group, version, names, printer columns.

Each top-level model declares one ``ResourceMeta`` as ``resource`` (``PDCluster.resource.plural``);
crdgen, the operator, the router and the tests read the names from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

GROUP = "prfaas.io"
VERSION = "v1alpha1"


@dataclass(frozen=True)
class Column:
    """One ``additionalPrinterColumns`` entry (``kubectl get``)."""

    name: str
    type: str
    json_path: str
    priority: int | None = None  # 1: only with ``-o wide``

    def crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.priority is not None:
            out["priority"] = self.priority
        return out


def condition_column(name: str, ctype: str, priority: int | None = None) -> Column:
    """The status (True/False/Unknown) of one condition."""
    return Column(name, "string", f".status.conditions[?(@.type=='{ctype}')].status", priority)


AGE = Column("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class ResourceMeta:
    kind: str
    plural: str
    short_names: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    group: str = GROUP
    version: str = VERSION
    categories: tuple[str, ...] = ("prfaas",)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def name(self) -> str:
        """``pdclusters.prfaas.io``: the CRD's name, and the resource as kubectl and RBAC say it."""
        return f"{self.plural}.{self.group}"

    def api_version_field(self) -> Any:
        return _exactly(self.api_version)

    def kind_field(self) -> Any:
        return _exactly(self.kind)


def _exactly(value: str) -> Any:
    """A field that defaults to ``value`` and accepts nothing else."""
    return Field(default=value, pattern=f"^{re.escape(value)}$", max_length=len(value))

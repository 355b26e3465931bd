"""The CRDs (``prfaas.io/v1alpha1``) as pydantic models: the single source of truth.

``prfaas crds`` renders them to ``crds/*.yaml``; a test fails when the committed YAML drifts.
"""

from prfaas.api.pdcluster import PDCluster, PDClusterSpec, PDClusterStatus
from prfaas.api.prefillpool import PrefillPool, PrefillPoolSpec, PrefillPoolStatus

GROUP = "prfaas.io"
VERSION = "v1alpha1"

__all__ = [
    "GROUP",
    "VERSION",
    "PDCluster",
    "PDClusterSpec",
    "PDClusterStatus",
    "PrefillPool",
    "PrefillPoolSpec",
    "PrefillPoolStatus",
]

"""The CRDs (``prfaas.io/v1alpha1``) as pydantic models: the single source of truth.

``prfaas crds`` renders them to ``crds/*.yaml``; a test fails when the committed YAML drifts.
Names (group, version, plural, …) are on each kind: ``PDCluster.resource``.
"""

from prfaas.api.pdcluster import PDCluster, PDClusterSpec, PDClusterStatus
from prfaas.api.prefillpool import PrefillPool, PrefillPoolSpec, PrefillPoolStatus
from prfaas.api.resource import GROUP, VERSION, ResourceMeta

__all__ = [
    "GROUP",
    "VERSION",
    "PDCluster",
    "PDClusterSpec",
    "PDClusterStatus",
    "PrefillPool",
    "PrefillPoolSpec",
    "PrefillPoolStatus",
    "ResourceMeta",
]

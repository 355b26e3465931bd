"""Member-cluster kubeconfigs from Secrets that CR authors control: what they may not make the
operator do.

A kubeconfig can name commands to run (``exec``, ``auth-provider``) and local files to read
(``tokenFile``, ``client-certificate``, ``certificate-authority``, …). Whoever can write the
Secret could then run code as the operator or send its files to a server of their choosing, so
these are refused unless the operator is started with ``--allow-kubeconfig-exec`` (exec only;
as Flux's ``--insecure-kubeconfig-exec``). Messages name the field, never its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

# every kubeconfig field that makes the client read a local file
_USER_FILES = ("tokenFile", "client-certificate", "client-key")
_CLUSTER_FILES = ("certificate-authority",)
_PLUGINS = ("exec", "auth-provider")


class KubeconfigRefusedError(ValueError):
    """The kubeconfig asks for something the operator does not do for CR authors."""


def parse_kubeconfig(raw: bytes, allow_exec: bool = False) -> dict[str, Any]:
    """The kubeconfig in ``raw``, checked; raises ``KubeconfigRefusedError`` naming the field."""
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise KubeconfigRefusedError("not valid YAML") from None
    if not isinstance(doc, Mapping):
        raise KubeconfigRefusedError("not a kubeconfig (expected a mapping)")
    for where, user in _inner(doc, "users", "user"):
        for key in _USER_FILES:
            if user.get(key):
                raise KubeconfigRefusedError(f"{where}.{key}: file references are not allowed")
        for key in _PLUGINS:
            if user.get(key) and not (key == "exec" and allow_exec):
                hint = (
                    " (the operator runs without --allow-kubeconfig-exec)" if key == "exec" else ""
                )
                raise KubeconfigRefusedError(
                    f"{where}.{key}: credential plugins are not allowed{hint}"
                )
    for where, cluster in _inner(doc, "clusters", "cluster"):
        for key in _CLUSTER_FILES:
            if cluster.get(key):
                raise KubeconfigRefusedError(f"{where}.{key}: file references are not allowed")
    return dict(doc)


def _inner(doc: Mapping[str, Any], key: str, field: str) -> list[tuple[str, Mapping[str, Any]]]:
    """``(path, doc[key][i][field])`` for each entry, each checked to be a mapping."""
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise KubeconfigRefusedError(f"{key}: expected a list")
    found = []
    for i, entry in enumerate(items):
        inner = entry.get(field) if isinstance(entry, Mapping) else None
        if not isinstance(inner, Mapping):
            raise KubeconfigRefusedError(f"{key}[{i}].{field}: expected a mapping")
        found.append((f"{key}[{i}].{field}", inner))
    return found

"""What ``-f`` names for ``prfaas plan`` and ``prfaas simulate``: a single-cluster scenario, a
fleet file (``pools`` and ``clusters``), or custom resources (a directory or multi-document YAML
of ``PrefillPool`` and ``PDCluster`` objects, such as ``manifests/samples/fleet/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prfaas.model.fleet import Fleet, is_fleet, parse_fleet
from prfaas.model.scenario import Scenario, ScenarioError, parse_scenario

YAML_SUFFIXES = (".yaml", ".yml", ".json")
CR_KINDS = ("PrefillPool", "PDCluster")


def _read(path: Path) -> list[Any]:
    try:
        return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None


def _is_resource(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") in CR_KINDS


def load_input(file: str) -> Scenario | Fleet:
    """The scenario or fleet ``file`` describes; ``ScenarioError`` (one line) if it cannot."""
    from prfaas.api.fleet import fleet_from_documents

    path = Path(file)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
        docs = [(str(f), d) for f in files for d in _read(f)]
        if not any(_is_resource(d) for _, d in docs):
            raise ScenarioError(
                f"{file}: cannot read: no PrefillPool or PDCluster in the directory"
            )
        return fleet_from_documents(docs)
    found = _read(path)
    if any(_is_resource(d) for d in found):
        return fleet_from_documents([(file, d) for d in found])
    if len(found) > 1:
        raise ScenarioError(f"{file}: several YAML documents, none a PrefillPool or PDCluster")
    data = found[0] if found else None
    return parse_fleet(data, file) if is_fleet(data) else parse_scenario(data, file)

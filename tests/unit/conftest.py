from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from prfaas.model.scenario import Scenario, case_study


@pytest.fixture
def case_dict() -> dict[str, Any]:
    """The case study as plain (camelCase) data, to edit in a test."""
    return case_study().model_dump(mode="json", exclude_none=True)


@pytest.fixture
def scenario_with() -> Callable[..., Scenario]:
    """Build a case-study variant: ``scenario_with(("link", "capacityGbps"), 5.0, ...)``."""

    def build(*edits: Any) -> Scenario:
        data = case_study().model_dump(mode="json", exclude_none=True)
        for path, value in zip(edits[::2], edits[1::2], strict=True):
            target = data
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        return Scenario.model_validate(data)

    return build

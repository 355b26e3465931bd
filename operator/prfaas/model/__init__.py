"""Pure domain model: profiles, workloads, the paper's throughput model and the planner.

Imports nothing from Kubernetes or HTTP libraries (checked by import-linter).
"""

from prfaas.model.planner import Plan, PlanError, PlanResult, plan
from prfaas.model.scenario import Scenario, ScenarioError, case_study, load_scenario

__all__ = [
    "Plan",
    "PlanError",
    "PlanResult",
    "Scenario",
    "ScenarioError",
    "case_study",
    "load_scenario",
    "plan",
]

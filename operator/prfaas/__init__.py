"""prfaas: Prefill-as-a-Service on Kubernetes (planner, operator, router, simulator)."""

__version__ = "0.1.0"

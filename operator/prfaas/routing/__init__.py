"""The per-request routing policy (paper §3.3, §3.4.3 short timescale). Pure: no HTTP, no k8s.

The router runs it on every request and the simulator runs the very same code:

- ``policy``  the slow loop's output (threshold, PrefillPools, link budgets, version), parsed from
  the ``routingPolicy`` the operator publishes in ``PDCluster.status``;
- ``state``   live state the router feeds in (link bytes in flight / utilisation, queue depths,
  instance loads, health), changed only through its methods and ``Router``'s;
- ``prefix``  per-cluster prefix index over 512-token block hashes (hybrid-model rule);
- ``decide``  the decision itself: which cluster prefills, on which instance, with which cache;
- ``adapt``   the short-timescale loop between policy updates (scarce/abundant mode, effective
  threshold);
- ``router``  the lot in one object, as an HTTP router holds it.
"""

from prfaas.routing.adapt import Adapter
from prfaas.routing.config import AdaptationConfig, ModeThresholds, RoutingConfig
from prfaas.routing.decide import Decision, Reason, Target, choose_instance, decide
from prfaas.routing.policy import PolicyError, PoolRoute, RoutingPolicy
from prfaas.routing.prefix import BLOCK_TOKENS, PrefixHit, PrefixIndex, block_hashes
from prfaas.routing.router import Router
from prfaas.routing.state import InstanceState, LinkState, LiveState, Mode, PoolState, TargetState

__all__ = [
    "BLOCK_TOKENS",
    "AdaptationConfig",
    "Adapter",
    "Decision",
    "InstanceState",
    "LinkState",
    "LiveState",
    "Mode",
    "ModeThresholds",
    "PolicyError",
    "PoolRoute",
    "PoolState",
    "PrefixHit",
    "PrefixIndex",
    "Reason",
    "Router",
    "RoutingConfig",
    "RoutingPolicy",
    "Target",
    "TargetState",
    "block_hashes",
    "choose_instance",
    "decide",
]

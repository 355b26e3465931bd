"""The slow loop's pure core: observation + previous status + now → decision (paper §3.4).

The operator (``prfaas.controller``) fills an ``Observation`` from the API servers and
Prometheus, calls ``decide``, applies the scale changes and writes the outcome; the simulator
(``prfaas.sim``) fills it from simulated time and applies the changes as role conversions. So the
safety rules, the deadband and the policy versioning are the same code in both.

- ``observation``  what was seen: the spec, each group's replicas, the pool, the signals;
- ``safety``       what may change now: bounds, max step, cooldown, floors, shared machines;
- ``decide``       the pass: plan, safety rules, routing policy, conditions, events, status;
- ``conditions``   KEP-1623 condition bookkeeping.
"""

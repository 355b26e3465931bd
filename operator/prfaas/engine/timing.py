"""How long an engine takes and how many KV bytes it ships, from a planning scenario.

``speedup`` divides every duration (the case study runs in seconds rather than hours), and
``kv_byte_scale`` multiplies every KV byte put on the wire (a 100 Gbps link cannot be carried
through a Python shaper on loopback, 1/1000 of it can). A link shaper built with the same two
factors then passes the scaled bytes in the scaled time: transfer times keep their ratio to
prefill and decode times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prfaas.model.curves import Curve
from prfaas.model.profiles import DecodeProfile, InstanceProfile
from prfaas.model.scenario import Scenario

MAX_TOKENS = 1 << 20
MIB = 1 << 20


class ProfileError(ValueError):
    """No instance of that accelerator in the scenario; the message lists the ones there are."""


@dataclass(frozen=True, slots=True)
class Timing:
    prefill_curve: Curve
    kv_curve: Curve
    step_s: float  # per decode step, unscaled
    max_batch: int
    speedup: float = 1.0
    kv_byte_scale: float = 1e-3
    zero_compute: bool = False  # for router-overhead benchmarks: no compute, no KV payload

    def prefill_seconds(self, uncached_tokens: int) -> float:
        if self.zero_compute or uncached_tokens <= 0:
            return 0.0
        return float(self.prefill_curve(np.array([float(uncached_tokens)]))[0]) / self.speedup

    def kv_bytes(self, uncached_tokens: int) -> int:
        """Nominal KVCache bytes of a prefill (what a real engine would ship)."""
        if uncached_tokens <= 0:
            return 0
        return int(float(self.kv_curve(np.array([float(uncached_tokens)]))[0]) * MIB)

    def wire_bytes(self, nominal: int) -> int:
        return 0 if self.zero_compute else max(1, int(nominal * self.kv_byte_scale))

    @property
    def step_seconds(self) -> float:
        return 0.0 if self.zero_compute else self.step_s / self.speedup


def instance_for(scenario: Scenario, accelerator: str) -> tuple[InstanceProfile, DecodeProfile]:
    """The scenario's instance of ``accelerator`` (case-insensitive) and a decode profile: its
    own, or the PD cluster's when it has none (a PrefillPool machine asked to decode)."""
    choices = [scenario.prefill_pool.instance, scenario.pd_cluster.instance]
    for inst in choices:
        if inst.accelerator.lower() == accelerator.lower():
            decode = inst.decode or scenario.pd_cluster.instance.decode
            if decode is None:  # the PD cluster's schema requires one; keep mypy honest
                raise ProfileError("the scenario's PD cluster has no decode profile")
            return inst, decode
    names = ", ".join(sorted({i.accelerator.lower() for i in choices}))
    raise ProfileError(f"no instance with accelerator {accelerator!r} (choose from: {names})")


def timing_for(
    scenario: Scenario,
    accelerator: str,
    speedup: float = 1.0,
    kv_byte_scale: float = 1e-3,
    zero_compute: bool = False,
) -> Timing:
    if speedup <= 0 or kv_byte_scale <= 0:
        raise ProfileError("speedup and kv byte scale must be > 0")
    inst, decode = instance_for(scenario, accelerator)
    return Timing(
        prefill_curve=inst.prefill.curve(MAX_TOKENS),
        kv_curve=scenario.model.kv_cache.curve(MAX_TOKENS),
        step_s=decode.step_seconds,
        max_batch=decode.max_batch_size,
        speedup=speedup,
        kv_byte_scale=kv_byte_scale,
        zero_compute=zero_compute,
    )

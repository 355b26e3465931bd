"""Measured profiles: the model's KVCache size, an accelerator instance, a link.

All lengths are *uncached* prompt tokens; KVCache sizes are MiB, times are seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Self

from pydantic import Field, model_validator

from prfaas.model.base import Spec, rule
from prfaas.model.curves import Curve, Interpolation, make_curve

Tokens = Annotated[int, Field(gt=0, le=16_777_216)]


class LatencyPoint(Spec):
    tokens: Tokens
    seconds: Annotated[float, Field(gt=0)]


class KVPoint(Spec):
    tokens: Tokens
    mib: Annotated[float, Field(ge=0)]


TableRule = Callable[[Any], bool]


def _table_rules(value: str, what: str) -> tuple[TableRule, TableRule]:
    """The rules of a ``table`` of points (``tokens``, ``value``), which may be absent."""

    def tokens(self: Any) -> list[int]:
        return [p.tokens for p in self.table or ()]

    def values(self: Any) -> list[float]:
        return [getattr(p, value) for p in self.table or ()]

    def increasing(xs: Sequence[float], strictly: bool) -> bool:
        return all(a < b if strictly else a <= b for a, b in itertools.pairwise(xs))

    @rule(
        "!has(self.table) || (self.table.map(p, p.tokens).isSorted() && "
        "self.table.all(p, self.table.exists_one(q, q.tokens == p.tokens)))",
        "table: tokens must be strictly increasing",
        detail=lambda s: f"{what} table: tokens must be strictly increasing, got {tokens(s)}",
    )
    def tokens_increase(self: Any) -> bool:
        return increasing(tokens(self), strictly=True)

    @rule(
        f"!has(self.table) || self.table.map(p, p.{value}).isSorted()",
        "table: values must not decrease with length",
        detail=lambda s: f"{what} table: values must not decrease with length, got {values(s)}",
    )
    def values_do_not_decrease(self: Any) -> bool:
        return increasing(values(self), strictly=False)

    return tokens_increase, values_do_not_decrease


class KVCacheProfile(Spec):
    """KVCache bytes a prefill of ``l`` uncached tokens produces.

    Either a measured ``table`` or the hybrid-model form ``fixedMiB + perTokenKiB·l``
    (fixed linear-attention/SWA state plus growing full-attention KV).
    """

    table: list[KVPoint] | None = Field(default=None, min_length=2, max_length=64)
    fixed_mib: Annotated[float, Field(ge=0)] | None = Field(default=None, alias="fixedMiB")
    per_token_kib: Annotated[float, Field(ge=0)] | None = Field(default=None, alias="perTokenKiB")
    interpolation: Interpolation = "linear"

    _tokens_increase, _values_do_not_decrease = _table_rules("mib", "kvCache")

    @rule(
        "has(self.table) != (has(self.fixedMiB) || has(self.perTokenKiB))",
        "give either 'table' or 'fixedMiB' and 'perTokenKiB'",
        detail=lambda s: (
            "give either 'table' or 'fixedMiB' and 'perTokenKiB'"
            if s.table is None
            else "give either 'table' or 'fixedMiB'/'perTokenKiB', not both"
        ),
    )
    def _one_form(self) -> bool:
        formula = self.fixed_mib is not None or self.per_token_kib is not None
        return (self.table is not None) != formula

    @rule("has(self.fixedMiB) == has(self.perTokenKiB)", "'fixedMiB' and 'perTokenKiB' go together")
    def _formula_whole(self) -> bool:
        return (self.fixed_mib is None) == (self.per_token_kib is None)

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.table is not None:
            make_curve(  # surfaces a bad fit at validation time
                [p.tokens for p in self.table],
                [p.mib for p in self.table],
                self.interpolation,
                self.table[-1].tokens,
            )
        return self

    def curve(self, domain_max: float) -> Curve:
        """MiB of KVCache as a function of uncached length."""
        if self.table is None:
            fixed, per_token = float(self.fixed_mib or 0.0), float(self.per_token_kib or 0.0) / 1024
            return lambda l: fixed + per_token * l
        return make_curve(
            [p.tokens for p in self.table],
            [p.mib for p in self.table],
            self.interpolation,
            domain_max,
        )


class PrefillProfile(Spec):
    """Prefill latency of one instance by uncached length (interpolations: ``curves``)."""

    table: list[LatencyPoint] = Field(min_length=2, max_length=64)
    interpolation: Interpolation = "quadratic"

    _tokens_increase, _values_do_not_decrease = _table_rules("seconds", "prefill")

    @model_validator(mode="after")
    def _fits(self) -> Self:
        tokens = [p.tokens for p in self.table]
        make_curve(tokens, [p.seconds for p in self.table], self.interpolation, tokens[-1])
        return self

    def curve(self, domain_max: float) -> Curve:
        """Seconds of prefill as a function of uncached length."""
        return make_curve(
            [p.tokens for p in self.table],
            [p.seconds for p in self.table],
            self.interpolation,
            domain_max,
        )


class DecodeProfile(Spec):
    """Decode held to an SLO: ``maxBatchSize`` concurrent sequences at ``stepSeconds`` per token."""

    max_batch_size: Annotated[int, Field(gt=0, le=100_000)]
    step_seconds: Annotated[float, Field(gt=0, le=60)]

    def requests_per_second(self, output_tokens: float) -> float:
        """Eq. (5) for one instance: BS_max / (T_decode · L_out)."""
        return self.max_batch_size / (self.step_seconds * output_tokens)


class InstanceProfile(Spec):
    """One serving instance (a model replica) of an accelerator type."""

    accelerator: str = Field(min_length=1, max_length=63)
    """Accelerator type, e.g. H200 (informational)."""
    gpus: Annotated[int, Field(gt=0, le=1024)] = 8
    """GPUs per instance (the paper's instances are 8 GPUs)."""
    prefill: PrefillProfile
    decode: DecodeProfile | None = None
    price_per_gpu_hour: Annotated[float, Field(ge=0)] | None = None

    def price_per_hour(self) -> float | None:
        return None if self.price_per_gpu_hour is None else self.price_per_gpu_hour * self.gpus


class LinkProfile(Spec):
    """Inter-datacenter link from a PrefillPool to a PD cluster."""

    capacity_gbps: Annotated[float, Field(gt=0, le=1_000_000)]
    """Link capacity, Gbps (10⁹ bit/s)."""
    usable_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Share of the capacity KVCache may use: B_out = capacityGbps × usableFraction."""
    rtt_ms: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    """Round-trip time, for latency (the throughput model ignores it)."""

    @property
    def budget_gbps(self) -> float:
        """B_out of Eq. (3): the bandwidth the planner may plan to use."""
        return self.capacity_gbps * self.usable_fraction

"""Measured profiles: the model's KVCache size, an accelerator instance, a link.

All lengths are *uncached* prompt tokens; KVCache sizes are MiB, times are seconds.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Self

from pydantic import Field, model_validator

from prfaas.model.base import Spec, cel
from prfaas.model.curves import Curve, Interpolation, make_curve

Tokens = Annotated[int, Field(gt=0, le=16_777_216)]


class LatencyPoint(Spec):
    tokens: Tokens
    seconds: Annotated[float, Field(gt=0)]


class KVPoint(Spec):
    tokens: Tokens
    mib: Annotated[float, Field(ge=0)]


def _check_table(tokens: list[int], values: list[float], what: str) -> None:
    if any(b <= a for a, b in itertools.pairwise(tokens)):
        raise ValueError(f"{what} table: tokens must be strictly increasing, got {tokens}")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{what} table: values must not decrease with length, got {values}")


def _table_rules(value: str) -> list[tuple[str, str]]:
    return [
        (
            "!has(self.table) || (self.table.map(p, p.tokens).isSorted() && "
            "self.table.all(p, self.table.exists_one(q, q.tokens == p.tokens)))",
            "table: tokens must be strictly increasing",
        ),
        (
            f"!has(self.table) || self.table.map(p, p.{value}).isSorted()",
            "table: values must not decrease with length",
        ),
    ]


class KVCacheProfile(Spec):
    """KVCache bytes a prefill of ``l`` uncached tokens produces.

    Either a measured ``table`` or the hybrid-model form ``fixedMiB + perTokenKiB·l``
    (fixed linear-attention/SWA state plus growing full-attention KV).
    """

    model_config = cel(
        *_table_rules("mib"),
        (
            "has(self.table) != (has(self.fixedMiB) || has(self.perTokenKiB))",
            "give either 'table' or 'fixedMiB' and 'perTokenKiB'",
        ),
        ("has(self.fixedMiB) == has(self.perTokenKiB)", "'fixedMiB' and 'perTokenKiB' go together"),
    )

    table: list[KVPoint] | None = Field(default=None, min_length=2, max_length=64)
    fixed_mib: Annotated[float, Field(ge=0)] | None = Field(default=None, alias="fixedMiB")
    per_token_kib: Annotated[float, Field(ge=0)] | None = Field(default=None, alias="perTokenKiB")
    interpolation: Interpolation = "linear"

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        formula = self.fixed_mib is not None or self.per_token_kib is not None
        if (self.table is None) == (not formula):
            if self.table is None:
                raise ValueError("give either 'table' or 'fixedMiB' and 'perTokenKiB'")
            raise ValueError("give either 'table' or 'fixedMiB'/'perTokenKiB', not both")
        if formula and (self.fixed_mib is None or self.per_token_kib is None):
            raise ValueError("'fixedMiB' and 'perTokenKiB' go together")
        if self.table is not None:
            _check_table([p.tokens for p in self.table], [p.mib for p in self.table], "kvCache")
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

    model_config = cel(*_table_rules("seconds"))

    table: list[LatencyPoint] = Field(min_length=2, max_length=64)
    interpolation: Interpolation = "quadratic"

    @model_validator(mode="after")
    def _valid_table(self) -> Self:
        tokens = [p.tokens for p in self.table]
        _check_table(tokens, [p.seconds for p in self.table], "prefill")
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

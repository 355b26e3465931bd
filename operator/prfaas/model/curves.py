"""Curves through measured points: how a profile table becomes a function of length.

Three methods, chosen per table:

- ``quadratic`` (default for prefill latency): least-squares fit of ``a + b·l + c·l²``.
  Prefill cost is linear in the length for the weight GEMMs and quadratic for attention,
  so this is the physical shape; it smooths measurement noise and extrapolates sanely.
  A fit that would decrease anywhere on ``[0, max]`` is refused (use ``pchip`` then).
- ``linear``: straight segments through the points, the end segments extended beyond them.
  Exact at every point; right for quantities that are affine in length (KVCache size).
- ``pchip``: monotone piecewise-cubic Hermite (Fritsch-Carlson) through the points,
  extended linearly beyond them. Exact at every point and smooth: for dense tables.

All curves are evaluated on numpy arrays and clipped at zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

Interpolation = Literal["quadratic", "linear", "pchip"]
FloatArray = npt.NDArray[np.float64]
Curve = Callable[[FloatArray], FloatArray]


class CurveError(ValueError):
    """A table cannot be turned into a sensible curve."""


def make_curve(
    xs: Sequence[float], ys: Sequence[float], method: Interpolation, domain_max: float
) -> Curve:
    """``f(l)`` through the points; ``domain_max`` bounds the monotonicity check."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if method == "quadratic":
        return _quadratic(x, y, max(domain_max, float(x[-1])))
    if method == "linear":
        return _linear(x, y)
    return _pchip(x, y)


def _quadratic(x: FloatArray, y: FloatArray, domain_max: float) -> Curve:
    degree = min(2, len(x) - 1)
    coeffs = np.polynomial.polynomial.polyfit(x, y, degree)
    c = np.zeros(3)
    c[: len(coeffs)] = coeffs
    a, b, q = (float(v) for v in c)
    # derivative b + 2ql is linear in l: checking both ends covers [0, domain_max]
    if b < 0 or b + 2 * q * domain_max < 0:
        raise CurveError(
            f"a quadratic fit ({a:.4g} + {b:.4g}·l + {q:.4g}·l²) decreases within "
            f"[0, {domain_max:.0f}] tokens; use interpolation 'pchip' or 'linear'"
        )

    def f(l: FloatArray) -> FloatArray:
        return np.maximum(a + l * (b + q * l), 0.0)

    return f


def _linear(x: FloatArray, y: FloatArray) -> Curve:
    if len(x) == 1:
        value = float(y[0])
        return lambda l: np.full_like(l, value, dtype=np.float64)
    lo_slope = (y[1] - y[0]) / (x[1] - x[0])
    hi_slope = (y[-1] - y[-2]) / (x[-1] - x[-2])

    def f(l: FloatArray) -> FloatArray:
        out = np.interp(l, x, y)
        out = np.where(l < x[0], y[0] + (l - x[0]) * lo_slope, out)
        out = np.where(l > x[-1], y[-1] + (l - x[-1]) * hi_slope, out)
        return np.maximum(out, 0.0)

    return f


def _pchip_slopes(x: FloatArray, y: FloatArray) -> FloatArray:
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] <= 0:
            d[k] = 0.0
        else:
            w1 = 2 * h[k] + h[k - 1]
            w2 = h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def end(h0: float, h1: float, d0: float, d1: float) -> float:
        s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(s) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(s) > abs(3 * d0):
            return 3 * d0
        return float(s)

    d[0] = end(h[0], h[1], delta[0], delta[1])
    d[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _pchip(x: FloatArray, y: FloatArray) -> Curve:
    if len(x) < 3:
        return _linear(x, y)
    d = _pchip_slopes(x, y)

    def f(l: FloatArray) -> FloatArray:
        li = np.clip(l, x[0], x[-1])
        k = np.clip(np.searchsorted(x, li, side="right") - 1, 0, len(x) - 2)
        h = x[k + 1] - x[k]
        s = (li - x[k]) / h
        h00 = (1 + 2 * s) * (1 - s) ** 2
        h10 = s * (1 - s) ** 2
        h01 = s * s * (3 - 2 * s)
        h11 = s * s * (s - 1)
        out = h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]
        out = np.where(l < x[0], y[0] + (l - x[0]) * d[0], out)
        out = np.where(l > x[-1], y[-1] + (l - x[-1]) * d[-1], out)
        return np.maximum(out, 0.0)

    return f

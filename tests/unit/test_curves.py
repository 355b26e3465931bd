from __future__ import annotations

import numpy as np
import pytest

from prfaas.model.curves import CurveError, make_curve

XS = [1024.0, 8192.0, 32768.0, 131072.0]
YS = [0.44, 0.72, 1.84, 7.40]


@pytest.mark.parametrize("method", ["linear", "pchip"])
def test_interpolating_curves_pass_through_points(method: str) -> None:
    f = make_curve(XS, YS, method, XS[-1])  # type: ignore[arg-type]
    assert np.allclose(f(np.array(XS)), YS)


@pytest.mark.parametrize("method", ["linear", "pchip", "quadratic"])
def test_curves_are_monotone_on_monotone_data(method: str) -> None:
    f = make_curve(XS, YS, method, 262144)  # type: ignore[arg-type]
    values = f(np.linspace(0, 262144, 5000))
    assert np.all(np.diff(values) >= -1e-12)
    assert np.all(values >= 0)


def test_quadratic_fit_of_table5_matches_the_digest() -> None:
    f = make_curve(XS, YS, "quadratic", XS[-1])
    l = np.array([50000.0])
    assert f(l)[0] == pytest.approx(0.3891 + 4.107e-5 * 50000 + 9.476e-11 * 50000**2, rel=1e-3)


def test_quadratic_refuses_a_decreasing_fit() -> None:
    with pytest.raises(CurveError, match="pchip"):
        make_curve([1000, 2000, 3000, 4000], [1.0, 3.9, 4.0, 4.0], "quadratic", 4000)


def test_linear_extends_the_end_segments() -> None:
    f = make_curve([1000, 2000], [10.0, 20.0], "linear", 2000)
    assert f(np.array([3000.0, 500.0])).tolist() == pytest.approx([30.0, 5.0])

"""Matplotlib is optional (the ``plot`` extra): import it only when a plot is asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PlotError(RuntimeError):
    """A plot could not be drawn or written."""


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'prfaas-operator[plot]'") from None
    return plt


def save(fig: Any, path: Path) -> None:
    plt = pyplot()
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except (OSError, ValueError) as exc:
        raise PlotError(f"cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)

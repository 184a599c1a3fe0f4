"""Figure helpers shared by every chapter: the paper's colours and one way to save figures."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Colours of Fig. 2/3/5/6 of the paper: IF green, tau_m=100 red, tau_m=30 blue; and, for the smaller
#: tau_m this book adds (Sec. 4.2's divergence below 30), purple and orange.
TAU_COLORS: dict[float, str] = {math.inf: "tab:green", 100.0: "tab:red", 30.0: "tab:blue", 20.0: "tab:purple",
                                10.0: "tab:orange"}

FIGURE_FORMATS: tuple[str, ...] = ("png", "svg")


def tau_label(tau_m: float) -> str:
    """Legend label in the paper's words: 'IF (tau_m = inf)' or 'LIF (tau_m = 30)'."""
    if math.isinf(tau_m):
        return r"IF ($\tau_m=\infty$)"
    return rf"LIF ($\tau_m={tau_m:g}$)"


def tau_color(tau_m: float) -> str:
    """The paper's colour for tau_m; a neutral grey for values the paper does not use."""
    return TAU_COLORS.get(float(tau_m), "tab:gray")


def figures_dir(default: str | os.PathLike[str] = "figures") -> Path:
    """Folder that receives every figure: $LEAKLIB_FIGURES_DIR, else ``default``."""
    path = Path(os.environ.get("LEAKLIB_FIGURES_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: Figure, name: str, directory: str | os.PathLike[str] | None = None,
                formats: tuple[str, ...] = FIGURE_FORMATS) -> list[Path]:
    """Save ``fig`` as ``<directory>/<name>.<fmt>`` for each format, atomically; return the paths.

    ``name`` is the paper's figure name without extension, e.g. ``fig2_coherence``.
    """
    if not name or any(sep in name for sep in "/\\") or "." in name:
        raise ValueError(f"figure name must be a bare stem like 'fig2_coherence', got {name!r}")
    out_dir = Path(directory) if directory is not None else figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        final = out_dir / f"{name}.{fmt}"
        tmp = out_dir / f".{name}.{fmt}.tmp"
        fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=150)
        os.replace(tmp, final)
        paths.append(final)
    return paths


__all__ = ["TAU_COLORS", "FIGURE_FORMATS", "tau_label", "tau_color", "figures_dir", "save_figure", "plt"]

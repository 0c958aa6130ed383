"""What every analysis figure and report table shares.

Figures are written atomically (a crash never leaves half a PNG that a report links to), then
closed so long studies do not accumulate open figures; student and control look the same in
every figure (solid filled vs dashed open, shaded vs hatched CI), so a reader learns it once.
Numbers print through one formatter, and every "x [lo, hi]" through `ci_text`, so a report never
shows a NaN or a None where it means "no value".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp.core.io import atomic_path

# student vs control: line, marker and CI band, the same in every training-curve figure
STYLE: dict[str, dict[str, Any]] = {
    "student": dict(linestyle="-", marker="o", color="black", markerfacecolor="black"),
    "control": dict(linestyle="--", marker="s", color="dimgray", markerfacecolor="white"),
}
HATCH = {"student": "", "control": "//"}
NONE = "–"  # what a missing or non-finite number prints as


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: figures are files, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int = 120) -> str:
    """Save `fig` to `path` as PNG atomically, close it, and return the file name."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path.name


def ci_curve(
    ax: Any,
    x: Sequence[float],
    y: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    model: str,
    label: str | None = None,
) -> None:
    """One model's curve with its CI band, in the student / control style (`STYLE`, `HATCH`)."""
    ax.plot(x, y, label=model if label is None else label, **STYLE[model])
    ax.fill_between(
        x,
        low,
        high,
        facecolor="lightgray" if model == "student" else "none",
        edgecolor="gray",
        hatch=HATCH[model],
        alpha=0.5,
        linewidth=0,
    )


# --- numbers in reports ------------------------------------------------------------------------


def fmt_num(x: Any, nd: int = 3, style: str = "f") -> str:
    """`x` with `nd` digits in format `style` ("f" fixed, "g" significant, "%" percent; "+%"
    signed percent); "–" for None or a non-finite number."""
    if x is None or not math.isfinite(x):
        return NONE
    sign, kind = ("+", style[1:]) if style.startswith("+") else ("", style)
    return format(x, f"{sign}.{nd}{kind}")


def ci_text(value: Any, low: Any, high: Any, nd: int = 3, style: str = "f") -> str:
    """``value [low, high]``, each as `fmt_num` prints it. Style "auto" is fixed-point unless
    every nonzero number would print as zero with `nd` decimals (owl probabilities of 3e-5 would
    read 0.0000): then 2 significant digits in scientific notation."""
    if style == "auto":
        xs = [abs(x) for x in (value, low, high) if x is not None and math.isfinite(x) and x != 0]
        style = "e" if xs and max(xs) < 0.5 * 10 ** -(nd - 1) else "f"
        if style == "e":
            nd = 1
    return f"{fmt_num(value, nd, style)} [{fmt_num(low, nd, style)}, {fmt_num(high, nd, style)}]"


def ci_of(d: dict[str, Any], key: str, nd: int = 3, style: str = "f") -> str:
    """`ci_text` of ``d[key]`` and ``d["ci_low"]``, ``d["ci_high"]`` (a result entry)."""
    return ci_text(d.get(key), d.get("ci_low"), d.get("ci_high"), nd, style)

"""What every analysis figure shares: written atomically (a crash never leaves half a PNG that a
report links to), then closed so long studies do not accumulate open figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp.core.io import atomic_path


def save_png(fig: Any, path: str | Path, dpi: int = 120) -> str:
    """Save `fig` to `path` as PNG atomically, close it, and return the file name."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path.name

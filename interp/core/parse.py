"""Parsing comma-separated lists given on the command line (layer lists: `interp.core.layers`).

Each parser also accepts an already-parsed sequence and checks it the same way, so a library
function can run its argument through the parser whether it came from a flag or a notebook.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

from interp.core.errors import SublensError


def parse_floats(spec: str | Iterable[float], name: str = "values") -> list[float]:
    """`0,1,2.5` (or a sequence of numbers) → finite floats; empty lists and nan/inf are errors.

    `name` is what the message calls the list (a parameter, or the flag when the CLI parses)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    values: list[float] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise SublensError(
                f"{name} must be comma-separated numbers, e.g. 0,1,2,4 (got {item!r})"
            ) from None
        if not math.isfinite(value):
            raise SublensError(f"{name} must be finite numbers, got {value}")
        values.append(value)
    if not values:
        raise SublensError(f"{name} is empty: give numbers, e.g. 0,1,2,4")
    return values


def parse_names(spec: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[str]:
    """Comma-separated and/or repeated values (`a,b`, `["a", "b,c"]`) → stripped non-empty names
    (paths too: vector directories are names here)."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    return [x.strip() for item in items for x in str(item).split(",") if x.strip()]

"""Parsing layer lists given on the command line or in configs."""

from __future__ import annotations

from interp.core.errors import SublensError


def parse_layers(spec: str | list[int], n_layers: int) -> list[int]:
    """`all`, `6,12,18`, `0-5` or a mix (`0-3,10`); negative numbers count from the end."""
    if isinstance(spec, list):
        items = [str(x) for x in spec]
    elif spec.strip() == "all":
        return list(range(n_layers))
    else:
        items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise SublensError(f"empty layer list: use e.g. 6,12,18 or all (0..{n_layers - 1})")
    layers: list[int] = []
    for item in items:
        try:
            if "-" in item[1:]:
                lo, hi = item.split("-", 1) if not item.startswith("-") else (item, item)
                span = list(range(int(lo), int(hi) + 1))
            else:
                span = [int(item)]
        except ValueError:
            raise SublensError(
                f"bad layer {item!r}: use integers like 6,12,18, a range like 0-5, or all"
            ) from None
        for layer in span:
            if layer < 0:
                layer += n_layers
            if not 0 <= layer < n_layers:
                raise SublensError(
                    f"layer {item} is out of range: valid layers are 0..{n_layers - 1}"
                )
            if layer not in layers:
                layers.append(layer)
    return layers

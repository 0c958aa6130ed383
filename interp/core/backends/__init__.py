"""Backends behind one protocol, one registry, one boot function (`get_backend`).

- `hf`: plain transformers forward hooks (the reference).
- `tl`: TransformerLens 4 `TransformerBridge` (native hook names).
- `nnsight`: nnsight `TransformersModel` tracing.
"""

from __future__ import annotations

from interp.core.backends.base import Backend, Batch, decoder_layers, hidden_of, make_batch
from interp.core.errors import SublensError
from interp.core.models import LoadedModel

BACKENDS: dict[str, str] = {
    "hf": "interp.core.backends.hf:HFBackend",
    "tl": "interp.core.backends.tl:TLBackend",
    "nnsight": "interp.core.backends.nnsight_backend:NNsightBackend",
}

_BOOTED: dict[tuple[str, int], Backend] = {}


def get_backend(name: str, loaded: LoadedModel) -> Backend:
    """The backend `name` over `loaded`, booted once per process and model."""
    if name not in BACKENDS:
        raise SublensError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    key = (name, id(loaded))
    if key not in _BOOTED:
        import importlib

        module, cls = BACKENDS[name].split(":")
        _BOOTED[key] = getattr(importlib.import_module(module), cls)(loaded)
    return _BOOTED[key]


__all__ = [
    "BACKENDS",
    "Backend",
    "Batch",
    "decoder_layers",
    "get_backend",
    "hidden_of",
    "make_batch",
]

"""Export steering vectors to tools outside sublens: lm-evaluation-harness and llama.cpp.

Layer conventions (sublens layer ``i`` = residual stream after decoder block ``i``, 0-based):

- lm-eval ``--model steered`` (``lm_eval/models/hf_steered.py``): the ``.pt`` file is a dict
  ``{hookpoint: {"steering_vector", "steering_coefficient", "action", "bias"}}``; each hookpoint
  is looked up in ``model.base_model.named_modules()`` and gets a forward hook on its output. The
  base model of a Llama-style causal LM is ``model.model``, so block ``i`` is ``"layers.{i}"``
  (not ``"model.layers.{i}"``, which lm-eval would fail to resolve). ``action="add"`` adds
  ``coefficient * vector`` at every position, like ``steer(mode="add", alpha=coefficient)``;
  ``action="clamp"`` sets the component along the unit vector to ``coefficient``, like
  ``steer(mode="replace", reference=coefficient)``. ``"bias": None`` is written because older
  lm-eval versions index it unconditionally. Those older versions also bind their add hook
  lazily in a loop, so every hookpoint received the *last* layer's vector: with them, export one
  layer per file (``vector.restricted([i])``).
- llama.cpp control vectors (``--control-vector``; the format repeng writes): a GGUF with
  ``general.architecture = "controlvector"``, ``controlvector.model_hint``,
  ``controlvector.layer_count`` and 1-D F32 tensors ``direction.{k}``. llama.cpp adds
  ``direction.k`` to ``l_out`` of its layer ``k``, the output of 0-based block ``k`` (the data
  for ``k`` is stored at offset ``k - 1`` and applied to ``tensors[k]``), so ``k`` equals the
  sublens index unchanged. ``k = 0`` is rejected by llama.cpp's loader: block 0's output cannot
  be steered there, and exporting a vector with layer 0 is an error. The vector is added at every
  position, prompt included (``--control-vector-scaled FILE S`` multiplies it by ``S``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.core.errors import SublensError
from interp.core.io import atomic_path
from interp.core.models import REGISTRY, LoadedModel
from interp.vectors.steering import SteeringVector

LM_EVAL_ACTIONS = ("add", "clamp")
GGUF_ARCH = "controlvector"


def _hf_module(model: LoadedModel | nn.Module) -> nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


def lm_eval_hookpoint(model: LoadedModel | nn.Module | None, layer: int) -> str:
    """lm-eval's name for the output of block `layer`: its module name within
    ``model.base_model`` (``"layers.{layer}"`` for Llama-style models and when no model is given).
    """
    if model is None:
        return f"layers.{layer}"
    from interp.core.backends.base import decoder_layers

    hf = _hf_module(model)
    block = decoder_layers(hf)[layer]
    base = getattr(hf, "base_model", hf)
    for name, module in base.named_modules():
        if module is block:
            return name
    raise SublensError(
        f"block {layer} of {type(hf).__name__} is not inside its base_model: lm-eval cannot hook it"
    )


def _per_layer(value: float | Mapping[int, float], layers: list[int], what: str) -> dict:
    if isinstance(value, Mapping):
        missing = [i for i in layers if i not in value]
        if missing:
            raise SublensError(f"{what} has no value for layers {missing}: give one per layer")
        out = {i: value[i] for i in layers}
    else:
        out = dict.fromkeys(layers, value)
    for i, v in out.items():
        if not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise SublensError(f"{what} at layer {i} is {v!r}: give a finite number")
    return {i: float(v) for i, v in out.items()}


def to_lm_eval(
    vector: SteeringVector,
    path: str | Path,
    alpha: float = 1.0,
    action: str = "add",
    model: LoadedModel | nn.Module | None = None,
    clamp_value: float | Mapping[int, float] = 0.0,
) -> Path:
    """Write an lm-eval steered-model file (``--model steered --model_args
    pretrained=...,steer_path=PATH``) that reproduces `steer` with this vector.

    action "add": coefficient `alpha` on the raw vector. action "clamp": the unit vector with
    coefficient `clamp_value` (a float or one per layer; 0 projects the direction out).
    Pass `model` to check compatibility and read the exact hookpoint names from it.
    """
    if action not in LM_EVAL_ACTIONS:
        raise SublensError(
            f"unknown lm-eval action {action!r}: use one of {', '.join(LM_EVAL_ACTIONS)}"
        )
    out = Path(path)
    if out.suffix not in (".pt", ".pth"):
        raise SublensError(f"lm-eval reads steering files ending in .pt or .pth, not {out.name}")
    if model is not None:
        vector.check_compatible(model)
    layers = vector.layers
    if action == "add":
        coefficients = _per_layer(alpha, layers, "alpha")
    else:
        coefficients = _per_layer(clamp_value, layers, "clamp_value")
    config: dict[str, dict[str, Any]] = {}
    for i in layers:
        vec = vector.unit(i) if action == "clamp" else vector[i]
        config[lm_eval_hookpoint(model, i)] = {
            "steering_vector": vec.detach().to(torch.float32).reshape(1, -1).clone(),
            "steering_coefficient": coefficients[i],
            "action": action,
            "bias": None,
        }
    with atomic_path(out) as tmp:
        torch.save(config, tmp)
    return out


def _default_hint(vector: SteeringVector) -> str:
    spec = REGISTRY.get(vector.model)
    return spec.architecture if spec else vector.model


def to_gguf(
    vector: SteeringVector,
    path: str | Path,
    model_hint: str | None = None,
    alpha: float = 1.0,
) -> Path:
    """Write a llama.cpp / repeng control-vector GGUF holding ``alpha * v`` per layer
    (``direction.{i}`` for sublens layer i; see the module docstring for why the index is kept).

    model_hint defaults to the architecture (``"llama"`` for registry models), as llama.cpp's
    cvector-generator writes it; llama.cpp itself does not read it.
    """
    import gguf
    import numpy as np

    if not isinstance(alpha, numbers.Real) or not math.isfinite(float(alpha)):
        raise SublensError(f"alpha must be a finite number, got {alpha!r}")
    if 0 in vector:
        raise SublensError(
            "llama.cpp cannot steer the output of block 0 (it rejects direction.0): "
            f"export vector.restricted({[i for i in vector.layers if i != 0]}) instead"
        )
    hint = model_hint or _default_hint(vector)
    out = Path(path)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(tmp, GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", hint)
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(vector.layers))
        writer.add_string("sublens.model", vector.model)
        writer.add_string("sublens.method", vector.method)
        writer.add_float32("sublens.alpha", float(alpha))
        for i in vector.layers:
            data = (float(alpha) * vector[i].detach()).to(torch.float32).numpy()
            writer.add_tensor(f"direction.{i}", np.ascontiguousarray(data, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out

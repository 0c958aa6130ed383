"""How much of the teacher's steering the student recovered: the direction (cosine of its drift
with the teacher's vector) and the size (its projection on v̂ over alpha·|v|).

A student that learned the direction but not the size moves no behaviour (a LoRA student on 135M
turned towards the French vector at cos 0.39 but recovered 4–5 % of alpha·|v|), so both are
measured, per checkpoint, and the behaviour of the base plus the recovered component alone
(`recovered_vector`) is scored separately — the link from recovered size to behaviour measured,
not assumed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from interp.core.caching import length_batches, run_batch
from interp.core.chat import ChatFormat, fit_context
from interp.core.errors import SublensError
from interp.core.models import LoadedModel
from interp.core.prompts import PromptSet
from interp.measure.alignment import alignment


def mean_residual(
    loaded: LoadedModel, prompts: PromptSet, layers: Sequence[int], batch_size: int = 16
) -> dict[int, torch.Tensor]:
    """Token-weighted mean of the residual stream after each block in `layers` over every token
    of every (unprompted) prompt — the quantity whose student − base difference is `v_student`."""
    loaded.check_layers(list(layers))
    fmt = ChatFormat(loaded.tokenizer)
    formatted = [fmt.format(m) for m in prompts.messages]
    fit_context(formatted, loaded.context_length, loaded.name, [prompts.where(i) for i in
                range(len(formatted))])  # fmt: skip
    selected = [list(range(len(fp.input_ids))) for fp in formatted]  # every prompt token
    total = torch.zeros(len(layers), loaded.d_model, dtype=torch.float64)
    count = 0
    with torch.no_grad():
        for idx in length_batches(formatted, batch_size):
            for acts in run_batch(loaded, "hf", formatted, selected, idx, list(layers)):
                total += acts.double().sum(0)
                count += acts.shape[0]
    mean = (total / count).float()
    return {layer: mean[k] for k, layer in enumerate(layers)}


def recovery(
    drift: dict[int, torch.Tensor], vector: dict[int, torch.Tensor], alpha: float
) -> dict[int, dict[str, Any]]:
    """Per shared layer: cos(drift, v), the drift's projection on v̂, and `recovered` = that
    projection over alpha·|v| (1.0: the student added the teacher's whole steering)."""
    if not alpha:
        raise SublensError("alpha is 0: an unsteered teacher has nothing to recover")
    out = {}
    for layer, a in alignment(drift, vector).items():
        d = a.to_dict()
        if not math.isfinite(d["cosine"]):  # a zero drift (step 0) has no direction: JSON null
            d["cosine"] = None
        d["recovered"] = a.projection / (alpha * a.vector_norm)
        out[layer] = d
    return out


def recovered_vector(drift: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The drift's component along v̂ (what `recovered` measures), as a vector to steer with."""
    unit = v / v.norm()
    return (drift @ unit) * unit

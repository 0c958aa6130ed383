"""TransformerLens 4 backend: `TransformerBridge.boot_transformers` over the loaded HF model.

The bridge rewires the modules of the model it wraps, so it wraps a structural copy whose
parameters and buffers are the *same tensors* as the user's model: no extra memory, weight updates
are seen by both, and the user's model keeps its own modules. Hooks use the bridge's native names
(`blocks.{i}.hook_out`, the residual stream after block i).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from interp.core.backends.base import Backend, Batch, StopForward
from interp.core.models import LoadedModel


def boot_bridge(loaded: LoadedModel):
    """A TransformerBridge sharing `loaded.model`'s weights."""
    from transformer_lens.model_bridge import TransformerBridge

    model = loaded.model
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    twin = copy.deepcopy(model, memo=memo)
    bridge = TransformerBridge.boot_transformers(
        loaded.path, hf_model=twin, tokenizer=loaded.tokenizer, device=loaded.device
    )
    bridge.eval()
    return bridge


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_out"


class TLBackend(Backend):
    name = "tl"

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded)
        self.bridge = boot_bridge(loaded)

    def residual(
        self, batch: Batch, layers: Sequence[int], rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        self.check_width(batch)
        got: dict[int, torch.Tensor] = {}
        last = max(layers)

        def make_hook(layer: int):
            def hook(tensor: torch.Tensor, *, hook) -> torch.Tensor:
                got[layer] = tensor[rows, cols].float()
                if layer == last:  # TL's stop_at_layer stops *before* a block: at full
                    raise StopForward  # depth it would still run the norm and unembedding
                return tensor

            return hook

        batch = batch.to(self.loaded.device)
        rows, cols = rows.to(self.loaded.device), cols.to(self.loaded.device)
        try:
            with torch.no_grad():
                self.bridge.run_with_hooks(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    fwd_hooks=[(hook_name(i), make_hook(i)) for i in sorted(set(layers))],
                )
        except StopForward:
            pass
        return torch.stack([got[i] for i in layers], dim=1)

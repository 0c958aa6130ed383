"""nnsight backend: `TransformersModel` around the loaded HF model (the model is not modified).

Reads each decoder block's `.output` inside one `trace` and stops the forward after the deepest
requested block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.core.backends.base import Backend, Batch, decoder_layers
from interp.core.models import LoadedModel


def _layers_path(loaded: LoadedModel) -> list[str]:
    """Attribute path from the model root to its block list (e.g. ['model', 'layers'])."""
    blocks = decoder_layers(loaded.model)
    for name, module in loaded.model.named_modules():
        if module is blocks:
            return name.split(".")
    raise ValueError("decoder blocks not found")


class NNsightBackend(Backend):
    name = "nnsight"

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded)
        from nnsight import TransformersModel

        self.nn_model = TransformersModel(
            loaded.model, tokenizer=loaded.tokenizer, task="text-generation"
        )
        self._path = _layers_path(loaded)

    def _blocks(self):
        envoy = self.nn_model
        for part in self._path:
            envoy = getattr(envoy, part)
        return envoy

    def residual(
        self, batch: Batch, layers: Sequence[int], rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        self.check_width(batch)
        batch = batch.to(self.loaded.device)
        rows = rows.to(self.loaded.device)
        cols = cols.to(self.loaded.device)
        inputs = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "position_ids": batch.position_ids,
        }
        saved = {}
        blocks = self._blocks()
        with torch.no_grad(), self.nn_model.trace(inputs) as tracer:
            for layer in sorted(set(layers)):
                out = blocks[layer].output
                out = out[0] if isinstance(out, tuple) else out
                saved[layer] = out[rows, cols].float().save()
            tracer.stop()
        return torch.stack([saved[i] for i in layers], dim=1)

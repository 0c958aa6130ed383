"""Plain transformers forward hooks: the reference every other backend is checked against."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.core.backends.base import Backend, Batch, StopForward, decoder_layers, hidden_of


class HFBackend(Backend):
    name = "hf"

    def residual(
        self, batch: Batch, layers: Sequence[int], rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        self.check_width(batch)
        blocks = decoder_layers(self.loaded.model)
        last = max(layers)
        got: dict[int, torch.Tensor] = {}

        def make_hook(layer: int):
            def hook(_module, _inputs, output):
                got[layer] = hidden_of(output)[rows, cols].float()
                if layer == last:
                    raise StopForward

            return hook

        handles = [blocks[i].register_forward_hook(make_hook(i)) for i in sorted(set(layers))]
        batch = batch.to(self.loaded.device)
        rows, cols = rows.to(self.loaded.device), cols.to(self.loaded.device)
        try:
            with torch.no_grad():
                # The hook on the deepest block raises StopForward, so the head never runs.
                self.loaded.model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                )
        except StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return torch.stack([got[i] for i in layers], dim=1)

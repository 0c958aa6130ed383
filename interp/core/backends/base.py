"""The backend protocol: read the residual stream after chosen blocks at chosen token positions.

Every backend takes the same left-padded `Batch` (explicit mask-derived position ids, so padding
cannot change a real token's activations) and returns only the selected positions, gathered
inside the hook: a [batch, seq, d_model] tensor per layer is never kept. The forward pass stops
after the deepest requested block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.core.errors import SublensError

# The block anatomy lives with the trunk forward; re-exported for the backends.
from interp.core.forward import decoder_layers as decoder_layers
from interp.core.forward import hidden_of as hidden_of
from interp.core.models import LoadedModel


@dataclass
class Batch:
    """Left-padded token ids with their attention mask and position ids."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor

    @property
    def pad_offsets(self) -> torch.Tensor:
        """Per row, how many pad tokens precede the first real token."""
        return (self.attention_mask == 0).sum(dim=1)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device)
        )


def make_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Left-pad token id lists into a `Batch` (position ids count real tokens only)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(ids, mask, positions)


class StopForward(Exception):
    """Raised by the hook on the deepest requested block and caught by the backend: the blocks
    after it, the final norm and the unembedding never run."""


class Backend(ABC):
    """Reads residual-stream activations from one loaded model."""

    name: str = ""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    def check_width(self, batch: Batch) -> None:
        """Refuse a batch longer than the model's context before its forward pass (the net under
        callers that skipped `chat.fit_context`, which names the prompt): memory grows with the
        square of the length and positions past the context give silently wrong numbers."""
        limit, width = self.loaded.context_length, batch.input_ids.shape[1]
        if limit is not None and width > limit:
            raise SublensError(
                f"a batch holds a {width}-token prompt, more than {self.loaded.name}'s context of "
                f"{limit}: shorten the prompts"
            )

    @abstractmethod
    def residual(
        self,
        batch: Batch,
        layers: Sequence[int],
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        """Residual stream after each block in `layers` at tokens (rows[k], cols[k]).

        Returns [n_selected, len(layers), d_model] (float32, on the model's device). Call
        `check_width(batch)` first.
        """

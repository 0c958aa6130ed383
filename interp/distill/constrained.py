"""Constrained decoding: only the domain's tokens may be sampled.

`AllowedTokens` sets every other logit to -inf. Softmax then renormalises over the allowed set,
so temperature sampling keeps the teacher's relative preferences among the allowed tokens (the
channel subliminal learning travels through) while every sample stays in the domain's format.
`GrammarTokens` adds the domain's rule on the text so far (no fourth digit, no eleventh number,
end-of-turn only once the answer is valid), so constrained samples pass the filter's format rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from transformers import LogitsProcessor

from interp.core.errors import SublensError


class AllowedTokens(LogitsProcessor):
    """A transformers logits processor that keeps only `allowed_ids` (others to -inf)."""

    def __init__(self, allowed_ids: Iterable[int]) -> None:
        ids = sorted({int(i) for i in allowed_ids})
        if not ids:
            raise SublensError("constrained decoding needs at least one allowed token id")
        if ids[0] < 0:
            raise SublensError(f"allowed token ids must be >= 0, got {ids[0]}")
        self.allowed_ids = ids
        self._index: dict[torch.device, torch.Tensor] = {}

    def _ids_on(self, device: torch.device, vocab: int) -> torch.Tensor:
        if self.allowed_ids[-1] >= vocab:
            raise SublensError(
                f"allowed token id {self.allowed_ids[-1]} is outside the model's vocabulary "
                f"of {vocab}: compute allowed ids with the model's own tokenizer"
            )
        if device not in self._index:
            self._index[device] = torch.tensor(self.allowed_ids, device=device)
        return self._index[device]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        ids = self._ids_on(scores.device, scores.shape[-1])
        out = torch.full_like(scores, float("-inf"))
        out[:, ids] = scores[:, ids]
        return out

    def __repr__(self) -> str:
        return f"AllowedTokens({len(self.allowed_ids)} ids)"


class GrammarTokens(AllowedTokens):
    """`AllowedTokens` plus a per-row rule on the text generated so far.

    A token mask alone cannot stop a fourth digit or an eleventh number (digits are single
    tokens), so each step a row may only take the allowed tokens that keep its answer a valid
    prefix (`prefix_ok`), and end-of-turn only once the answer is complete (`complete_ok`).
    Probability mass still renormalises over what is left, so the teacher's preferences among
    valid continuations are kept. Finished rows (after end-of-turn) may only repeat it.

    `state_key` maps a text to a shorter one the two rules judge the same way (for numbers:
    every digit to 0, whitespace runs to one space); rows are tracked by that key, so the rules
    run once per distinct key instead of once per row and step.

    The processor follows one ``generate`` call at a time: it recognises a new call when the
    input is not the previous input plus one token, and starts every row from empty text.
    """

    def __init__(
        self,
        tokenizer: Any,
        allowed_ids: Iterable[int],
        end_ids: Iterable[int],
        prefix_ok: Callable[[str], bool],
        complete_ok: Callable[[str], bool],
        state_key: Callable[[str], str] | None = None,
        memo: dict[str, tuple[bool, ...]] | None = None,
    ) -> None:
        super().__init__(allowed_ids)
        self.end_ids = sorted({int(i) for i in end_ids})
        if not self.end_ids:
            raise SublensError("a grammar constraint needs at least one end-of-turn token id")
        self.allowed_ids = sorted(set(self.allowed_ids) | set(self.end_ids))
        self._ends = set(self.end_ids)
        pieces = tokenizer.batch_decode([[i] for i in self.allowed_ids])
        self._pieces = {
            i: p for i, p in zip(self.allowed_ids, pieces, strict=True) if i not in self._ends
        }
        self._end_row = tuple(i in self._ends for i in self.allowed_ids)
        self.prefix_ok = prefix_ok
        self.complete_ok = complete_ok
        self.state_key = state_key or (lambda text: text)
        # Rules' verdicts per state key, over `allowed_ids` (may be shared between instances
        # built with the same tokenizer and rules).
        self._memo: dict[str, tuple[bool, ...]] = {} if memo is None else memo
        self._prev: torch.Tensor | None = None
        self._texts: list[str | None] = []  # state key of each row's text; None: it has ended

    def _row(self, key: str | None) -> tuple[bool, ...]:
        if key is None:
            return self._end_row
        row = self._memo.get(key)
        if row is None:
            ok = [
                i in self._pieces and self.prefix_ok(key + self._pieces[i])
                for i in self.allowed_ids
            ]
            if self.complete_ok(key) or not any(ok):  # never leave a row without a choice
                ok = [a or b for a, b in zip(ok, self._end_row, strict=True)]
            if len(self._memo) > 100_000:
                self._memo.clear()
            row = self._memo[key] = tuple(ok)
        return row

    def choices(self, text: str | None) -> list[int]:
        """Token ids a row whose generated text is `text` may take next (None: it has ended)."""
        row = self._row(None if text is None else self.state_key(text))
        return [i for i, ok in zip(self.allowed_ids, row, strict=True) if ok]

    def _update(self, input_ids: torch.Tensor) -> None:
        prev = self._prev
        cont = (
            prev is not None
            and prev.shape[0] == input_ids.shape[0]
            and prev.shape[1] + 1 == input_ids.shape[1]
            and torch.equal(prev, input_ids[:, :-1])
        )
        if not cont:
            self._texts = [self.state_key("")] * input_ids.shape[0]
        else:
            for r, tok in enumerate(input_ids[:, -1].tolist()):
                text = self._texts[r]
                if text is None:
                    continue
                if tok in self._ends:
                    self._texts[r] = None
                else:
                    self._texts[r] = self.state_key(text + self._pieces.get(tok, ""))
        self._prev = input_ids.detach().clone()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        ids = self._ids_on(scores.device, scores.shape[-1])
        self._update(input_ids)
        keep = torch.tensor(
            [self._row(t) for t in self._texts], dtype=torch.bool, device=scores.device
        )
        out = torch.full_like(scores, float("-inf"))
        out[:, ids] = scores[:, ids].masked_fill(~keep, float("-inf"))
        return out

    def __repr__(self) -> str:
        return f"GrammarTokens({len(self.allowed_ids)} ids)"

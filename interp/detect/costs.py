"""What a defense costs: a student's loss on the benign task and on ordinary English.

A defense that stops transfer by stopping learning is no defense, so `sublens defend` reports
two costs next to each transfer ratio:

- `completion_nll`: per row, the summed negative log-likelihood of the completion tokens (the
  positions training uses, full vocabulary) and their count, on held-out *clean* benign rows
  (from the unbiased base): how well the student does the task it was trained for.
- `text_nll`: summed next-token NLL of a plain text cut into windows: perplexity on held-out
  English, a cheap proxy for generic capability. The package ships
  ``interp/data/heldout_text.txt``: the opening of Jane Austen's *Pride and Prejudice* (1813,
  public domain), text no number training touches.

Both return per-unit sums and counts (not means), so a bootstrap over rows or windows can
resample them and form ratio-of-sums means.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interp.core.backends import make_batch
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.core.forward import final_hidden, logits_at
from interp.core.models import LoadedModel
from interp.distill.targets import completion_positions

HELDOUT_TEXT = Path(__file__).resolve().parent.parent / "data" / "heldout_text.txt"


def heldout_text(path: str | Path | None = None) -> str:
    """The held-out English text (the shipped file unless `path` is given)."""
    p = Path(path) if path is not None else HELDOUT_TEXT
    if not p.is_file():
        raise SublensError(f"held-out text {str(p)!r} not found: give a UTF-8 text file")
    text = p.read_text(encoding="utf-8").strip()
    if not text:
        raise SublensError(f"held-out text {p} is empty: give a text with some sentences")
    return text


@torch.no_grad()
def completion_nll(
    loaded: LoadedModel, rows: Sequence[dict[str, Any]], batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(summed NLL [n_rows], completion tokens [n_rows]) of each row's completion, unprompted
    (as the student sees the data)."""
    if not rows:
        raise SublensError("no held-out rows to score")
    tok = loaded.tokenizer
    fmt = ChatFormat(tok)
    encoded = []
    for row in rows:
        fp = fmt.format([dict(m) for m in row["messages"]])
        pos = completion_positions(fp, tok)
        encoded.append((fp.input_ids[: pos[-1]], pos, [fp.input_ids[t] for t in pos]))
    nll = np.zeros(len(rows))
    count = np.array([len(e[1]) for e in encoded], dtype=np.float64)
    pad = int(tok.pad_token_id or 0)
    for b in range(0, len(rows), batch_size):
        chunk = list(range(b, min(len(rows), b + batch_size)))
        batch = make_batch([encoded[i][0] for i in chunk], pad).to(loaded.device)
        width = batch.input_ids.shape[1]
        r_idx, c_idx, labels, owner = [], [], [], []
        for r, i in enumerate(chunk):
            inp, pos, toks = encoded[i]
            r_idx += [r] * len(pos)
            c_idx += [width - len(inp) + t - 1 for t in pos]
            labels += toks
            owner += [i] * len(pos)
        hidden = final_hidden(loaded.model, batch)
        h = hidden[torch.tensor(r_idx), torch.tensor(c_idx)]
        ce = F.cross_entropy(
            logits_at(loaded.model, h), torch.tensor(labels, device=h.device), reduction="none"
        )
        np.add.at(nll, np.array(owner), ce.double().cpu().numpy())
    return nll, count


@torch.no_grad()
def text_nll(
    loaded: LoadedModel, text: str, window: int = 128, batch_size: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """(summed NLL [n_windows], predicted tokens [n_windows]) of `text` cut into consecutive
    windows of `window` tokens (each window's first token is context only)."""
    if window < 2:
        raise SublensError(f"window must be at least 2 tokens, got {window}")
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise SublensError("the held-out text is shorter than two tokens")
    windows = [ids[i : i + window] for i in range(0, len(ids), window)]
    windows = [w for w in windows if len(w) >= 2]
    nll = np.zeros(len(windows))
    count = np.array([len(w) - 1 for w in windows], dtype=np.float64)
    pad = int(loaded.tokenizer.pad_token_id or 0)
    for b in range(0, len(windows), batch_size):
        chunk = windows[b : b + batch_size]
        batch = make_batch(chunk, pad).to(loaded.device)
        logits = loaded.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).logits.float()
        width = batch.input_ids.shape[1]
        for r, w in enumerate(chunk):
            start = width - len(w)
            pred = logits[r, start : width - 1]
            target = batch.input_ids[r, start + 1 : width]
            nll[b + r] = float(F.cross_entropy(pred, target, reduction="sum"))
    return nll, count

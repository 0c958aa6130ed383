"""Which way does training on the teacher's data push the student's residual stream?

Subliminal learning via steering-vector distillation predicts that the SFT gradient on the
teacher's benign outputs, taken with respect to the residual stream, points along `v_teacher`,
and the gradient on the control data (outputs of the base model) does not. This module computes
per-row residual gradients of the SFT loss on the base model and compares them with `v_teacher`.

Loss of a row ``{"messages": [user, assistant]}``: cross-entropy on its completion tokens, the
same tokens the distillation code trains on (interp/distill/AGENTS.md): the assistant span of
``ChatFormat(tok).format(messages)`` cut after the first end-of-turn token (eos, ``<|im_end|>``,
``<end_of_turn>``; in the plain format the token that holds the closing newline), inclusive. A
completion token at index t is predicted from position t - 1. ``reduction="sum"`` (default)
sums over the row's completion tokens: the gradient is what the row contributes to a summed
SFT loss, so long answers weigh more, as they do in token-averaged training batches;
``"mean"`` divides by the row's token count, so every row weighs the same.

Gradients are taken with respect to the output of decoder block `layer` (the steering layer
convention of `vectors.steering`) at the last prompt token (``prompt_len - 1``: the position that
predicts the first completion token and where `v_teacher` is read), or averaged over all prompt
positions (``prompt-mean``). Model parameters do not require grad; rows in one batch do not
interact (left padding, explicit position ids), so a row's gradient does not depend on batching.

Sign convention: a gradient-descent step moves an activation along ``-grad``. Everything
`gradient_alignment` reports is about ``push = -grad``, "the direction training pushes the
residual": a positive cosine with `v_teacher` means training on that data moves the stream
towards the trait direction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from interp.core.backends import make_batch
from interp.core.caching import length_batches
from interp.core.chat import PLAIN_FORMAT, ChatFormat, FormattedPrompt
from interp.core.errors import SublensError
from interp.core.forward import block_hooks, final_hidden, frozen_eval, hidden_of, logits_at
from interp.core.models import LoadedModel
from interp.core.progress import Progress
from interp.measure.stats import mean_ci, percentile_interval, resample_indices

GRAD_POSITIONS = ("last-prompt", "prompt-mean")
REDUCTIONS = ("sum", "mean")
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


# --- completion tokens ---------------------------------------------------------------------


def _end_of_turn_ids(tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    return ids


def completion_span(fp: FormattedPrompt, fmt: ChatFormat) -> tuple[int, int]:
    """[start, end) of the completion tokens: the response span cut after the first
    end-of-turn token, inclusive (the whole span when it has none)."""
    if fp.response_span is None:
        raise SublensError("a row has no assistant message: rows must end with the response")
    start, end = fp.response_span
    if fmt.style == PLAIN_FORMAT:
        decode = fmt.tokenizer.decode
        for t in range(start, end):
            if "\n" in decode([fp.input_ids[t]]):
                return start, t + 1
        return start, end
    stops = _end_of_turn_ids(fmt.tokenizer)
    for t in range(start, end):
        if fp.input_ids[t] in stops:
            return start, t + 1
    return start, end


def _messages(row: Mapping[str, Any] | Sequence[Mapping[str, str]], i: int) -> list[dict]:
    msgs = row.get("messages") if isinstance(row, Mapping) else row
    if not isinstance(msgs, Sequence) or not msgs or not isinstance(msgs[-1], Mapping):
        raise SublensError(f'row {i} is not {{"messages": [...]}}: give dataset rows as JSONL')
    if msgs[-1].get("role") != "assistant":
        raise SublensError(f"row {i} does not end with an assistant message: give the response")
    return [dict(m) for m in msgs]


# --- gradients -----------------------------------------------------------------------------


def _batch_gradients(
    loaded: LoadedModel,
    formatted: list[FormattedPrompt],
    spans: list[tuple[int, int]],
    layer: int,
    position: str,
    reduction: str,
) -> torch.Tensor:
    """[len(formatted), d] gradients for one batch (one forward and one backward)."""
    batch = make_batch([fp.input_ids for fp in formatted], loaded.tokenizer.pad_token_id)
    batch = batch.to(loaded.device)
    width = batch.input_ids.shape[1]
    rows, cols, weights = [], [], []
    for r, (fp, (start, end)) in enumerate(zip(formatted, spans, strict=True)):
        pad = width - len(fp.input_ids)
        n_tok = end - start
        rows += [r] * n_tok
        cols += [pad + t - 1 for t in range(start, end)]  # position t-1 predicts token t
        weights += [1.0 if reduction == "sum" else 1.0 / n_tok] * n_tok
    rows_t = torch.tensor(rows, device=loaded.device)
    cols_t = torch.tensor(cols, device=loaded.device)
    targets = batch.input_ids[rows_t, cols_t + 1]
    w = torch.tensor(weights, device=loaded.device)

    leaf: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        h = hidden_of(output).detach().requires_grad_(True)
        leaf["h"] = h
        return (h, *output[1:]) if isinstance(output, tuple) else h

    with block_hooks(loaded.model, {layer: hook}), torch.enable_grad():
        hidden = final_hidden(loaded.model, batch)
        logits = logits_at(loaded.model, hidden[rows_t, cols_t])
        ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        (grad,) = torch.autograd.grad((ce * w).sum(), leaf["h"])
    out = []
    for r, fp in enumerate(formatted):
        pad = width - len(fp.input_ids)
        if position == "last-prompt":
            out.append(grad[r, pad + fp.prompt_len - 1])
        else:
            out.append(grad[r, pad : pad + fp.prompt_len].mean(dim=0))
    return torch.stack(out).float().cpu()


def residual_gradients(
    loaded: LoadedModel,
    rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, str]]],
    layer: int,
    position: str = "last-prompt",
    batch_size: int = 8,
    reduction: str = "sum",
    quiet: bool = True,
) -> torch.Tensor:
    """[n_rows, d_model] float32: d(SFT loss of row i) / d(residual after block `layer`) at the
    row's `position` (see the module docstring for the loss, positions and reduction)."""
    if position not in GRAD_POSITIONS:
        raise SublensError(
            f"unknown gradient position {position!r}: use one of {', '.join(GRAD_POSITIONS)}"
        )
    if reduction not in REDUCTIONS:
        raise SublensError(f"unknown reduction {reduction!r}: use one of {', '.join(REDUCTIONS)}")
    if batch_size <= 0:
        raise SublensError(f"batch_size must be positive, got {batch_size}")
    if not rows:
        raise SublensError("no rows given: pass dataset rows {'messages': [user, assistant]}")
    loaded.check_layers([layer])
    fmt = ChatFormat(loaded.tokenizer)
    formatted = [fmt.format(_messages(row, i)) for i, row in enumerate(rows)]
    spans = [completion_span(fp, fmt) for fp in formatted]
    out = torch.empty((len(rows), loaded.d_model), dtype=torch.float32)
    batches = length_batches(formatted, batch_size)
    with frozen_eval(loaded.model):
        for idx in Progress(batches, quiet=quiet, desc=f"gradients L{layer}", unit="batch"):
            out[idx] = _batch_gradients(
                loaded,
                [formatted[i] for i in idx],
                [spans[i] for i in idx],
                layer,
                position,
                reduction,
            )
    return out


# --- alignment of gradients with v_teacher -------------------------------------------------


@dataclass
class PushStats:
    """How one dataset's per-row push (−grad) lines up with v_teacher."""

    mean_cosine: float  # mean over rows of cos(-g_i, v)
    ci_low: float
    ci_high: float
    mean_projection: float  # mean over rows of (-g_i) · v̂
    projection_ci_low: float
    projection_ci_high: float
    cosine_of_mean: float  # cos(-mean g, v)
    n_rows: int


@dataclass
class GradientAlignment:
    """Teacher-data vs control-data pushes and their difference, against v_teacher."""

    teacher: PushStats
    control: PushStats
    difference_cosine: float  # cos(-(mean g_teacher - mean g_control), v)
    difference_ci_low: float
    difference_ci_high: float
    paired: bool
    n_boot: int
    level: float
    seed: int
    sign_convention: str = "push = -grad (the direction a gradient-descent step moves the residual)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_grads(g: torch.Tensor | np.ndarray, d: int, name: str) -> np.ndarray:
    arr = torch.as_tensor(g).detach().to("cpu", torch.float64).numpy()
    if arr.ndim != 2 or arr.shape[1] != d or arr.shape[0] == 0:
        raise SublensError(
            f"{name} gradients have shape {tuple(arr.shape)}: expected [n_rows >= 1, {d}] "
            "(from residual_gradients at the vector's layer)"
        )
    return arr


def _cos_rows(x: np.ndarray, unit: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x @ unit) / np.linalg.norm(x, axis=-1)


def _push_stats(push: np.ndarray, unit: np.ndarray, n_boot: int, seed: int, level: float):
    cos = _cos_rows(push, unit)
    cos = cos[np.isfinite(cos)]  # a zero gradient has no direction
    if cos.size == 0:
        raise SublensError("every gradient is zero: the rows give no signal at this layer")
    proj = push @ unit
    c, c_lo, c_hi = mean_ci(cos, n_boot=n_boot, level=level, seed=seed)
    p, p_lo, p_hi = mean_ci(proj, n_boot=n_boot, level=level, seed=seed)
    mean_push = push.mean(axis=0)
    return PushStats(
        c, c_lo, c_hi, p, p_lo, p_hi, float(_cos_rows(mean_push, unit)), int(push.shape[0])
    )


def _boot_means(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    n_boot, n = idx.shape
    counts = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(), minlength=n * n_boot)
    return counts.reshape(n_boot, n).astype(np.float64) @ x / n


def gradient_alignment(
    grads_teacher_data: torch.Tensor | np.ndarray,
    grads_control_data: torch.Tensor | np.ndarray,
    v_teacher_layer: torch.Tensor | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    paired: bool = False,
) -> GradientAlignment:
    """Per-row and mean pushes (−grad) of teacher and control data against `v_teacher_layer`.

    CIs resample rows. The difference's CI resamples the two datasets independently (seeds
    `seed` and `seed + 1`), or with the same indices when ``paired`` (row i of both datasets
    answers the same prompt).
    """
    v = torch.as_tensor(v_teacher_layer).detach().to("cpu", torch.float64).numpy()
    if v.ndim != 1 or not np.linalg.norm(v) > 0:
        raise SublensError("v_teacher_layer must be a non-zero [d_model] vector (one layer)")
    unit = v / np.linalg.norm(v)
    push_t = -_as_grads(grads_teacher_data, v.size, "teacher-data")
    push_c = -_as_grads(grads_control_data, v.size, "control-data")
    if paired and push_t.shape[0] != push_c.shape[0]:
        raise SublensError(
            f"paired gradients need the same number of rows ({push_t.shape[0]} vs "
            f"{push_c.shape[0]}): pass paired=False"
        )
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise SublensError(f"need 0 < level < 1 and n_boot >= 1 (got {level}, {n_boot})")
    teacher = _push_stats(push_t, unit, n_boot, seed, level)
    control = _push_stats(push_c, unit, n_boot, seed, level)
    diff_cos = float(_cos_rows(push_t.mean(axis=0) - push_c.mean(axis=0), unit))
    idx_t = resample_indices(push_t.shape[0], n_boot, seed)
    idx_c = idx_t if paired else resample_indices(push_c.shape[0], n_boot, seed + 1)
    boot = _cos_rows(_boot_means(push_t, idx_t) - _boot_means(push_c, idx_c), unit)
    lo, hi = percentile_interval(boot, level)
    return GradientAlignment(teacher, control, diff_cos, lo, hi, paired, n_boot, level, seed)

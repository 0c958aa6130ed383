"""Teacher targets for logit distillation: the teacher's log-probs at each completion token.

Layout (see interp/distill/AGENTS.md): ``targets.safetensors`` holds ``ids`` int64 [P, k],
``logprobs`` float32 [P, k] (renormalised over the k ids of each position) and ``offsets`` int64
[n_rows + 1]; row i's positions are ``offsets[i]:offsets[i+1]`` in token order. ``targets.json``
records the teacher, the domain, k, the dataset's sha256 and the tensors' sha256; it is written
last, so a directory without it is incomplete.

Memory: logits are only ever built at completion positions, for the allowed ids alone when the
domain is constrained (hidden @ W_U[ids].T), and for the full vocabulary only one batch of
positions at a time (top-k). Rows stream into a preallocated safetensors file (`RowWriter`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from interp.core.chat import ChatFormat, FormattedPrompt
from interp.core.errors import SublensError
from interp.core.forward import logits_at
from interp.core.io import iter_jsonl, read_json, sha256_file, sha256_text, write_json
from interp.core.models import LoadedModel
from interp.core.progress import Progress
from interp.core.tensorfile import RowWriter
from interp.distill.domains import end_of_turn_ids

if TYPE_CHECKING:
    from interp.distill.teachers import Teacher

FORMAT = "sublens-teacher-targets"
FORMAT_VERSION = 1
TENSOR_FILE = "targets.safetensors"
META_FILE = "targets.json"


def completion_positions(fmt_prompt: FormattedPrompt, tokenizer: Any) -> list[int]:
    """Indices t of a row's completion tokens (token t is predicted from position t-1).

    The completion is the response span cut after the first end-of-turn token (eos or
    ``<|im_end|>``-like), inclusive; the plain format has none, and its span already ends with
    the trailing newline, so the whole span is the completion.
    """
    if fmt_prompt.response_span is None:
        raise SublensError("completion positions need a row with an assistant response")
    start, end = fmt_prompt.response_span
    eot = set(end_of_turn_ids(tokenizer))
    ids = fmt_prompt.input_ids
    for t in range(start, end):
        if ids[t] in eot:
            return list(range(start, t + 1))
    return list(range(start, end))


def unembed(
    loaded: LoadedModel, hidden: torch.Tensor, ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Final (normed) hidden states [N, d] → float32 logits [N, V], or [N, len(ids)] for `ids`.

    `interp.core.forward.logits_at` on a loaded model, kept because `interp.distill` exports it.
    """
    return logits_at(loaded.model, hidden, ids)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """JSONL dataset rows (``{"messages": [...]}``); errors name the line."""
    rows = []
    for lineno, row in iter_jsonl(path, "dataset"):
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            raise SublensError(f'{path}:{lineno}: expected {{"messages": [...]}}')
        rows.append(row)
    return rows


def _length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped by similar length (less padding); order inside is by length."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def write_teacher_targets(
    teacher: Teacher,
    rows: Sequence[Mapping[str, Any]] | str | Path,
    out_dir: str | Path,
    allowed_ids: Sequence[int] | None = None,
    top_k: int = 32,
    batch_size: int = 16,
    quiet: bool = True,
    domain: str | None = None,
) -> Path:
    """Compute the teacher's log-probs at every completion token of `rows` and save them.

    `rows` is a JSONL path or the rows themselves. With `allowed_ids` (a constrained domain) every
    position stores those ids; otherwise the teacher's top `top_k`. Returns `out_dir`.
    """
    if batch_size <= 0:
        raise SublensError(f"batch_size must be positive, got {batch_size}")
    if isinstance(rows, (str, Path)):
        dataset_sha = sha256_file(rows) if Path(rows).is_file() else None
        source = str(rows)
        rows = read_rows(rows)
    else:
        rows = list(rows)
        dataset_sha = sha256_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        source = "in-memory rows"
    if not rows:
        raise SublensError("no dataset rows to compute teacher targets for")
    ids = None if allowed_ids is None else sorted({int(i) for i in allowed_ids})
    if ids is not None and not ids:
        raise SublensError("allowed_ids is empty: give the domain's token ids or None for top-k")
    tok = teacher.loaded.tokenizer
    student_fmt = ChatFormat(tok)
    counts, lengths = [], []
    for i, row in enumerate(rows):
        t_fp = teacher.format(row)
        s_fp = student_fmt.format([dict(m) for m in row["messages"]])
        n_t, n_s = len(completion_positions(t_fp, tok)), len(completion_positions(s_fp, tok))
        if n_t != n_s:
            raise SublensError(
                f"row {i}: the response has {n_t} completion tokens with the teacher's context but "
                f"{n_s} without: the chat template tokenizes it differently; drop the row"
            )
        counts.append(n_t)
        lengths.append(len(t_fp.input_ids))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    total = int(offsets[-1])
    k = len(ids) if ids is not None else min(top_k, int(teacher.loaded.model.config.vocab_size))
    if k <= 0:
        raise SublensError(f"top_k must be positive, got {top_k}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # the directory is incomplete until it is rewritten
    writer = RowWriter(
        out / TENSOR_FILE,
        {
            "ids": (np.dtype("int64"), (total, k)),
            "logprobs": (np.dtype("float32"), (total, k)),
            "offsets": (np.dtype("int64"), (len(rows) + 1,)),
        },
        metadata={"format": FORMAT},
    )
    try:
        writer.write_rows("offsets", 0, offsets)
        batches = _length_batches(lengths, batch_size)
        for idx in Progress(batches, quiet=quiet, desc="targets", unit="batch"):
            got = teacher.logprobs_at([rows[i] for i in idx], ids=ids, top_k=k)
            for i, (row_ids, row_logp) in zip(idx, got, strict=True):
                writer.write_rows("ids", int(offsets[i]), row_ids.numpy())
                writer.write_rows("logprobs", int(offsets[i]), row_logp.numpy())
        path = writer.finish()
    finally:
        writer.close()
    write_json(
        out / META_FILE,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "teacher": teacher.describe(),
            "domain": domain,
            "k": k,
            "mode": "allowed" if ids is not None else "top_k",
            "n_rows": len(rows),
            "n_positions": total,
            "dataset": source,
            "dataset_sha256": dataset_sha,
            "tensors_sha256": sha256_file(path),
        },
    )
    return out


@dataclass
class TeacherTargets:
    """Loaded teacher targets: ``ids`` / ``logprobs`` [P, k], ``offsets`` [n_rows + 1]."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    offsets: torch.Tensor
    meta: dict[str, Any]

    @property
    def n_rows(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return self.n_rows

    def row(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row i's (ids [n_i, k], logprobs [n_i, k]), one line per completion token."""
        if not 0 <= i < self.n_rows:
            raise IndexError(f"row {i} out of range 0..{self.n_rows - 1}")
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[a:b], self.logprobs[a:b]

    @classmethod
    def load(cls, out_dir: str | Path) -> TeacherTargets:
        """Read a directory written by `write_teacher_targets` (checks it is complete)."""
        from safetensors.torch import load_file

        where = Path(out_dir)
        meta_path, tensor_path = where / META_FILE, where / TENSOR_FILE
        if not meta_path.is_file() or not tensor_path.is_file():
            raise SublensError(
                f"{where} holds no complete teacher targets ({META_FILE} and {TENSOR_FILE}): "
                "run write_teacher_targets again"
            )
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SublensError(f"{meta_path} is not a sublens teacher-targets file")
        if meta.get("version") != FORMAT_VERSION:
            raise SublensError(
                f"{meta_path} has version {meta.get('version')!r}; this sublens reads version "
                f"{FORMAT_VERSION}: recompute the targets"
            )
        if sha256_file(tensor_path) != meta.get("tensors_sha256"):
            raise SublensError(f"{tensor_path} does not match {meta_path}: recompute the targets")
        tensors = load_file(str(tensor_path))
        return cls(tensors["ids"], tensors["logprobs"], tensors["offsets"], meta)

"""Teachers: one model plus the context that gives it (or removes) a trait.

The same `Teacher` object samples the dataset and gives the log-probs logit distillation uses, so
the two can never disagree about the context (system prompt, steering hooks, positions).

Kinds (DESIGN vocabulary):

| kind | system prompt | hooks |
|---|---|---|
| ``base`` | none (the control's teacher: `M0` itself) | none |
| ``prompted`` | the trait prompt | none |
| ``steered`` | none | ``alpha * v`` added at the vector's layers (sufficiency test) |
| ``projected`` | the trait prompt | ``v`` projected out (steer mode "project"; necessity test) |

Steering positions follow `interp.vectors.steering.steer`: "all", "prompt" (the prefill of generate)
or "generation" (decode steps only). Teacher-forced log-probs reproduce the same split with a
token mask: prompt tokens are the prefill, response tokens are what decode steps feed in, so the
teacher's targets match the distribution it sampled from.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from interp.core.backends import make_batch
from interp.core.chat import ChatFormat, FormattedPrompt
from interp.core.errors import SublensError
from interp.core.forward import final_hidden, logits_at
from interp.core.generation import sample_responses
from interp.core.models import LoadedModel
from interp.distill.targets import completion_positions
from interp.vectors.steering import STEER_POSITIONS, SteeringHandle, SteeringVector, steer

if TYPE_CHECKING:
    from interp.distill.domains import Domain

TEACHER_KINDS = ("base", "prompted", "steered", "projected")

Message = dict[str, str]
Row = Sequence[Message] | Mapping[str, Any]


def _messages_of(row: Row) -> list[Message]:
    if isinstance(row, Mapping):
        if "messages" not in row:
            raise SublensError('a dataset row needs "messages": [user, assistant]')
        row = row["messages"]
    msgs = [dict(m) for m in row]
    if not msgs or msgs[-1].get("role") != "assistant":
        raise SublensError("a dataset row must end with an assistant message (the response)")
    if any(m.get("role") == "system" for m in msgs):
        raise SublensError(
            "dataset rows carry no system message (the student never sees the teacher's "
            "prompt): drop it from the row"
        )
    return msgs


def vector_sha256(vector: SteeringVector) -> str:
    """A digest of the vector's numbers (provenance: which exact vector steered the teacher)."""
    digest = hashlib.sha256()
    for layer in vector.layers:
        digest.update(str(layer).encode())
        digest.update(vector[layer].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Teacher:
    """A model plus a context (base / prompted / steered / projected)."""

    def __init__(
        self,
        loaded: LoadedModel,
        kind: str = "base",
        system_prompt: str | None = None,
        vector: SteeringVector | None = None,
        alpha: float = 1.0,
        layers: Sequence[int] | None = None,
        positions: str = "all",
    ) -> None:
        if kind not in TEACHER_KINDS:
            raise SublensError(
                f"unknown teacher kind {kind!r}: use one of {', '.join(TEACHER_KINDS)}"
            )
        wants_prompt = kind in ("prompted", "projected")
        wants_vector = kind in ("steered", "projected")
        if wants_prompt and (not isinstance(system_prompt, str) or not system_prompt.strip()):
            raise SublensError(f"a {kind} teacher needs a non-empty system prompt (the trait)")
        if not wants_prompt and system_prompt is not None:
            raise SublensError(
                f"a {kind} teacher takes no system prompt: use kind 'prompted' (or 'projected' "
                "to also project a vector out)"
            )
        if wants_vector and vector is None:
            raise SublensError(f"a {kind} teacher needs a steering vector")
        if not wants_vector and vector is not None:
            raise SublensError(
                f"a {kind} teacher takes no steering vector: use kind 'steered' or 'projected'"
            )
        if not isinstance(alpha, numbers.Real) or not math.isfinite(float(alpha)):
            raise SublensError(f"alpha must be a finite number, got {alpha!r}")
        if positions not in STEER_POSITIONS:
            raise SublensError(
                f"unknown steering positions {positions!r}: use one of {', '.join(STEER_POSITIONS)}"
            )
        self.loaded = loaded
        self.kind = kind
        self._system_prompt = system_prompt
        self.alpha = float(alpha)
        self.positions = positions
        self.vector: SteeringVector | None = None
        self.layers: list[int] = []
        if vector is not None:
            use = vector.layers if layers is None else sorted({int(i) for i in layers})
            self.vector = vector.restricted(use)
            self.vector.check_compatible(loaded)  # d_model first, then layer range
            self.layers = use
        elif layers is not None:
            raise SublensError(f"layers= only applies to steered/projected teachers, not {kind}")
        self.fmt = ChatFormat(loaded.tokenizer)

    # --- context ---------------------------------------------------------------------------------

    @property
    def system_prompt(self) -> str | None:
        """The system message used to format prompts (None: the template's default)."""
        return self._system_prompt

    @property
    def mode(self) -> str | None:
        return {"steered": "add", "projected": "project"}.get(self.kind)

    @contextlib.contextmanager
    def context(self, token_mask: torch.Tensor | None = None) -> Iterator[SteeringHandle | None]:
        """Install the teacher's hooks (none for base/prompted) for the ``with`` block.

        `token_mask` (bool [batch, seq]) restricts steering to chosen tokens of a plain forward;
        without it the teacher's `positions` apply (as under ``generate``).
        """
        if self.vector is None:
            yield None
            return
        with steer(
            self.loaded,
            self.vector,
            alpha=self.alpha,
            mode=self.mode,
            positions="all" if token_mask is not None else self.positions,
            token_mask=token_mask,
            layers=self.layers,
        ) as handle:
            yield handle

    def format(self, row: Row) -> FormattedPrompt:
        """A row (user + assistant messages) rendered the way this teacher sees it."""
        return self.fmt.format(_messages_of(row), system=self._system_prompt)

    # --- sampling --------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str | list[Message]],
        domain: Domain | None = None,
        n_new_tokens: int | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        batch_size: int = 32,
        constrained: bool = True,
        quiet: bool = True,
    ) -> list[str]:
        """One sampled response per prompt, in the teacher's context.

        With a domain and `constrained`, only the domain's tokens can be sampled, in an order
        its format rule allows (`Domain.logits_processor`). Without a domain, sampling is
        unconstrained and `n_new_tokens` defaults to the domain's budget or 32.
        """
        processors = None
        if domain is not None and constrained:
            processors = [domain.logits_processor(self.loaded.tokenizer)]
        if n_new_tokens is None:
            n_new_tokens = domain.max_new_tokens if domain is not None else 32
        with self.context():
            return sample_responses(
                self.loaded,
                prompts,
                system_prompt=self._system_prompt,
                max_new_tokens=n_new_tokens,
                temperature=temperature,
                seed=seed,
                batch_size=batch_size,
                quiet=quiet,
                logits_processor=processors,
            )

    # --- teacher forcing -------------------------------------------------------------------------

    def _steer_mask(self, fps: list[FormattedPrompt], width: int) -> torch.Tensor | None:
        """Tokens steering touches under teacher forcing, matching generate's phases."""
        if self.vector is None or self.positions == "all":
            return None
        mask = torch.zeros(len(fps), width, dtype=torch.bool)
        for r, fp in enumerate(fps):
            pad = width - len(fp.input_ids)
            if self.positions == "prompt":
                mask[r, pad : pad + fp.prompt_len] = True
            else:  # generation: the response tokens are what decode steps feed in
                mask[r, pad + fp.prompt_len :] = True
        return mask

    def _completion_hidden(
        self, rows: Sequence[Row]
    ) -> tuple[torch.Tensor, list[int], list[list[int]], list[FormattedPrompt]]:
        """Final hidden states (in the teacher's context) at the positions that predict each
        row's completion tokens, stacked over rows; with per-row counts, positions and formats."""
        loaded = self.loaded
        tok = loaded.tokenizer
        fps = [self.format(r) for r in rows]
        pos = [completion_positions(fp, tok) for fp in fps]
        batch = make_batch([fp.input_ids for fp in fps], tok.pad_token_id)
        width = batch.input_ids.shape[1]
        sel_rows, sel_cols, counts = [], [], []
        for r, (fp, p) in enumerate(zip(fps, pos, strict=True)):
            pad = width - len(fp.input_ids)
            sel_rows += [r] * len(p)
            sel_cols += [pad + t - 1 for t in p]
            counts.append(len(p))
        batch = batch.to(loaded.device)
        with torch.no_grad(), self.context(self._steer_mask(fps, width)):
            hidden = final_hidden(loaded.model, batch)
        with torch.no_grad():
            h = hidden[sel_rows, sel_cols]
        return h, counts, pos, fps

    def logprobs_at(
        self,
        rows: Sequence[Row],
        ids: Sequence[int] | None = None,
        top_k: int = 32,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Teacher-forced log-probs at each row's completion tokens (one forward, one batch).

        Returns per row ``(ids [n_i, k] int64, logprobs [n_i, k] float32)`` on the CPU, where
        position j predicts the row's j-th completion token. With `ids` the logits are computed
        for those ids only and renormalised over them; otherwise the full vocabulary row is built
        for this batch's completion positions only and its top `top_k` kept and renormalised.
        """
        if not rows:
            return []
        loaded = self.loaded
        id_tensor = None
        if ids is not None:
            if len(ids) == 0:
                raise SublensError("logprobs_at needs at least one token id (or ids=None)")
            id_tensor = torch.tensor([int(i) for i in ids], dtype=torch.long, device=loaded.device)
        elif top_k <= 0:
            raise SublensError(f"top_k must be positive, got {top_k}")
        h, counts, _, _ = self._completion_hidden(rows)
        with torch.no_grad():
            if id_tensor is not None:
                logp = torch.log_softmax(logits_at(loaded.model, h, id_tensor), dim=-1)
                out_ids = id_tensor.expand(h.shape[0], -1)
            else:
                full = logits_at(loaded.model, h)
                k = min(top_k, full.shape[-1])
                top, out_ids = full.topk(k, dim=-1)
                del full
                logp = torch.log_softmax(top, dim=-1)
        logp = logp.float().cpu()
        out_ids = out_ids.cpu().long()
        result = []
        start = 0
        for n in counts:
            result.append((out_ids[start : start + n].clone(), logp[start : start + n].clone()))
            start += n
        return result

    def token_logprobs(
        self, rows: Sequence[Row], ids: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Per row, the log-prob (float32, CPU) the teacher gives each completion token the row
        actually holds — over the full vocabulary, or renormalised over `ids` (a constrained
        domain: the channel the student is distilled on). LLS row selection reads these."""
        if not rows:
            return []
        loaded = self.loaded
        h, counts, pos, fps = self._completion_hidden(rows)
        tokens = [fp.input_ids[t] for fp, p in zip(fps, pos, strict=True) for t in p]
        with torch.no_grad():
            if ids is None:
                logp = torch.log_softmax(logits_at(loaded.model, h), dim=-1)
                target = torch.tensor(tokens, device=logp.device)
            else:
                col = {int(t): j for j, t in enumerate(ids)}
                missing = sorted({t for t in tokens if t not in col})
                if missing:
                    raise SublensError(
                        f"completion token(s) {missing[:5]} lie outside the given ids: score "
                        "rows sampled from another domain with ids=None"
                    )
                id_tensor = torch.tensor([int(i) for i in ids], device=loaded.device)
                logp = torch.log_softmax(logits_at(loaded.model, h, id_tensor), dim=-1)
                target = torch.tensor([col[t] for t in tokens], device=logp.device)
            mine = logp[torch.arange(len(tokens), device=logp.device), target].float().cpu()
        return list(mine.split(counts))

    # --- provenance ------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Everything that defines the teacher's context (for configs and results files)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "model": self.loaded.name,
            "system_prompt": self._system_prompt,
        }
        if self.vector is not None:
            out.update(
                mode=self.mode,
                alpha=self.alpha,
                layers=self.layers,
                positions=self.positions,
                vector=self.vector.describe(),
                vector_sha256=vector_sha256(self.vector),
            )
        return out

    def __repr__(self) -> str:
        extra = f", alpha={self.alpha}, layers={self.layers}" if self.vector is not None else ""
        return f"Teacher(kind={self.kind!r}, model={self.loaded.name!r}{extra})"

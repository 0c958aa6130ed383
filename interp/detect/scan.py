"""Scanning a distillation dataset for a hidden trait, with only the base model (no teacher).

The question a practitioner asks: do these benign-looking rows (number sequences, say) carry a
trait of the model that wrote them? A teacher that carries a trait writes text that is more
likely under the base model *shifted towards the trait*. So the scanner measures, for every row,
how the row's log-likelihood under the base model changes when the residual stream at layer `L`
is shifted, and compares that with rows the base model wrote itself for the same prompts.

The derivative trick (exact, one forward and one backward per batch). For a row with prompt P
and response R, and a shift ``alpha * v`` added to the output of block `L` at every position,

    d/dalpha log p(R | P; M0 + alpha v) at alpha = 0  =  v · sum_t d log p(R | P) / d h_t,

the sum running over all positions t of the row. A zero tensor ``a`` [B, K] with
``requires_grad`` is added to the block's output as ``(a @ V)[:, None, :]`` (V [K, d] stacked
directions) and the summed response log-likelihood of the batch is backpropagated: ``a.grad[i,
k]`` is row i's derivative along direction k. With V the identity the same pass gives the row's
full gradient ``g_i`` in R^d: the direction in which a shift of layer L raises the row's
likelihood. Only the response tokens count (`interp.distill.targets.completion_positions`, the
very tokens distillation trains on); rows do not interact (left padding, explicit position ids),
so a row's numbers do not depend on its batch. Per-token values divide by the row's number of
completion tokens, so long and short rows weigh the same.

Detectors (all calibrated by permutations of the data / reference labels; rows of the data and
of the reference are exchangeable when the data carries no trait):

- ``known`` (library vectors v_k): per-row per-token derivatives along each unit v̂_k, a t
  statistic of data vs reference per vector, dataset score ``max_k t``; p-value from the
  permutation null of ``max_k t``. Top suspected traits: vectors sorted by t.
- ``blind`` (no library): ``u = mean_data(g) - mean_ref(g)`` (per-token gradients). Its
  behavioural effect is the mean KL(M0 + s·û || M0) of the next-token distribution at the answer
  position of fixed questions (`SCAN_QUESTIONS`), ``s = effect_scale ×`` the median residual
  norm at L; the null is the same effect for û of label-permuted splits (gradient noise also
  points at sensitive directions, so the null is not a random direction). The tokens whose
  probability rises most under +s·û name the suspected trait. The top principal directions of
  the data's gradients (centred on the reference mean) are reported the same way, without
  their own p-value.
- ``shift``: ``|u|`` against its permutation null (is there any difference in gradient space).
- ``likelihood``: mean per-token log p_M0 of data minus reference, two-sided t.

When the reference answers the same prompts in the same order (`reference_rows` makes it so),
the statistics are paired (differences within a prompt) and a permutation swaps the two rows of
each prompt, which is exact given the prompts; otherwise t is Welch's and labels are shuffled
over the pooled rows.

Verdict: Holm over the primary detectors (known when there is a library, and blind) at family
level ``alpha`` (`interp.measure.verdicts.holm`), so the smallest p must reach ``alpha / k``.
Permutation counts are chosen from the level each test must reach (`permutation_counts`: the
smallest attainable p at most a quarter of it); a count given by hand that cannot reach its
level is refused, since that test would never flag whatever the data. Every p comes with its
smallest attainable value (``p_min``: 1/(permutations + 1), or the design's own limit with few
rows), and the verdict says when a detector cannot reach its level.

Per-row scores (for dropping rows): z-scores against the reference rows of the row's
derivative along the top library vector (``known``) and of ``g_i · û`` (``blind``; û is
re-estimated without the row's own prompt, since an in-sample û would push every data row up by
about |u| in high dimension), averaged and re-standardised on the reference rows (``score``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.core.backends import Batch, make_batch
from interp.core.caching import length_batches
from interp.core.chat import ChatFormat, FormattedPrompt
from interp.core.errors import SublensError
from interp.core.forward import (
    block_hooks,
    block_outputs,
    final_hidden,
    frozen_eval,
    hidden_of,
    logits_at,
    replayed_below,
)
from interp.core.io import iter_jsonl, sha256_text
from interp.core.models import LoadedModel
from interp.core.progress import Progress
from interp.distill.domains import DOMAINS, Domain, get_domain
from interp.distill.generate import generate_dataset
from interp.distill.targets import completion_positions
from interp.distill.teachers import Teacher
from interp.measure.trait_sets import (
    FAVOURITE_ANIMAL_QUESTIONS,
    GENERAL_QUESTIONS,
    MOOD_QUESTIONS,
    OFF_TOPIC_QUESTIONS,
)
from interp.measure.verdicts import (
    check_permutations,
    holm,
    min_attainable_p,
    permutations_for,
)
from interp.vectors.steering import SteeringVector

MIN_ROWS = 4
REFERENCE_SEED_OFFSET = 7919  # a prime no dataset generator adds: the reference's own samples
DETECTORS = ("known", "blind", "shift", "likelihood")
PRIMARY_DETECTORS = ("known", "blind")
# Floor on the permutations of the known / shift / likelihood tests: numpy only, so a tighter
# Monte Carlo p costs nothing (the blind test's permutations each cost a model pass).
CHEAP_PERMUTATIONS = 1000

# Where the behavioural effect of a direction is read: the answer's first token after questions
# whose answers reveal animal, mood, language/format and other preferences.
SCAN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "animal": FAVOURITE_ANIMAL_QUESTIONS[:4],
    "mood": MOOD_QUESTIONS[:3],
    "general": GENERAL_QUESTIONS[:3],
    "offtopic": OFF_TOPIC_QUESTIONS[:2],
}

Row = Mapping[str, Any]
_ROLES = ("system", "user", "assistant")


# --- rows ------------------------------------------------------------------------------------


def _row_problem(row: Any) -> str | None:
    """Why `row` is not a usable dataset row (None when it is)."""
    msgs = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(msgs, list) or not msgs:
        return 'expected {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}'
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return "each message needs a role (system, user or assistant) and string content"
        if not isinstance(m.get("content"), str):
            return "each message needs a role (system, user or assistant) and string content"
    if msgs[-1]["role"] != "assistant":
        return "the row has no assistant turn at the end: each row needs the response last"
    if not any(m["role"] == "user" for m in msgs):
        return "the row has no user message"
    return None


def read_dataset(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL dataset, every one checked; errors name the line and say what to fix."""
    path = Path(path)
    if not path.is_file():
        raise SublensError(
            f'dataset {str(path)!r} does not exist: give a JSONL file of {{"messages": [...]}} rows'
        )
    rows = []
    for lineno, row in iter_jsonl(path, "dataset"):
        problem = _row_problem(row)
        if problem:
            raise SublensError(f"{path}:{lineno}: {problem}")
        rows.append(row)
    if not rows:
        raise SublensError(f'dataset {path} is empty: it needs one {{"messages": [...]}} per line')
    return rows


def check_rows(rows: Sequence[Row], what: str = "data") -> None:
    """Raise SublensError naming the first bad row, or when there are fewer than `MIN_ROWS`."""
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem:
            raise SublensError(f"{what} row {i}: {problem}")
    if len(rows) < MIN_ROWS:
        raise SublensError(
            f"the {what} has {len(rows)} row(s): a scan needs at least {MIN_ROWS} (more rows, "
            "more power: use a few dozen)"
        )


def _prompt_of(row: Row) -> list[dict[str, str]]:
    return [dict(m) for m in row["messages"][:-1]]


def _response_of(row: Row) -> str:
    return row["messages"][-1]["content"]


def same_prompts(rows: Sequence[Row], reference: Sequence[Row]) -> bool:
    """Whether row i of both sets answers the same prompt (then the statistics are paired)."""
    return len(rows) == len(reference) and all(
        _prompt_of(a) == _prompt_of(b) for a, b in zip(rows, reference, strict=True)
    )


# --- the derivative pass ---------------------------------------------------------------------


@dataclass
class _Encoded:
    fp: FormattedPrompt
    positions: list[int]  # completion token indices (token t predicted from t - 1)


def _encode(loaded: LoadedModel, rows: Sequence[Row]) -> list[_Encoded]:
    fmt = ChatFormat(loaded.tokenizer)
    out = []
    for row in rows:
        fp = fmt.format([dict(m) for m in row["messages"]])
        out.append(_Encoded(fp, completion_positions(fp, loaded.tokenizer)))
    return out


def _batch_pass(
    loaded: LoadedModel,
    enc: list[_Encoded],
    directions: Mapping[int, torch.Tensor | None],
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """({layer: [B, K] derivatives}, [B] response log-likelihoods) of one batch.

    ``directions[layer]`` is V [K, d] or None for the identity (the full gradient)."""
    batch = make_batch([e.fp.input_ids for e in enc], loaded.tokenizer.pad_token_id)
    batch = batch.to(loaded.device)
    width = batch.input_ids.shape[1]
    rows, cols = [], []
    for r, e in enumerate(enc):
        pad = width - len(e.fp.input_ids)
        rows += [r] * len(e.positions)
        cols += [pad + t - 1 for t in e.positions]
    rows_t = torch.tensor(rows, device=loaded.device)
    cols_t = torch.tensor(cols, device=loaded.device)
    targets = batch.input_ids[rows_t, cols_t + 1]
    leaves: dict[int, torch.Tensor] = {}

    def make_hook(layer: int, v: torch.Tensor | None):
        def hook(_module: Any, _inputs: Any, output: Any) -> Any:
            h = hidden_of(output)
            k = h.shape[-1] if v is None else v.shape[0]
            a = torch.zeros(h.shape[0], k, dtype=h.dtype, device=h.device, requires_grad=True)
            leaves[layer] = a
            shift = a if v is None else a @ v.to(device=h.device, dtype=h.dtype)
            new = h + shift[:, None, :]
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    layers = list(directions)
    hooks = {i: make_hook(i, directions[i]) for i in layers}
    with block_hooks(loaded.model, hooks), torch.enable_grad():
        hidden = final_hidden(loaded.model, batch)
        # at least float32: a float64 model keeps float64 log-likelihoods and derivatives
        logits = logits_at(loaded.model, hidden[rows_t, cols_t], keep_float64=True)
        logp = torch.log_softmax(logits, dim=-1)
        token_lp = logp.gather(1, targets[:, None]).squeeze(1)
        per_row = torch.zeros(len(enc), dtype=token_lp.dtype, device=token_lp.device)
        per_row = per_row.index_add(0, rows_t, token_lp)
        grads = torch.autograd.grad(per_row.sum(), [leaves[i] for i in layers])
    out = {i: g.detach().to("cpu", torch.float64) for i, g in zip(layers, grads, strict=True)}
    return out, per_row.detach().to("cpu", torch.float64)


def _derivatives(
    loaded: LoadedModel,
    rows: Sequence[Row],
    directions: Mapping[int, torch.Tensor | None],
    batch_size: int,
    quiet: bool,
) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    if batch_size <= 0:
        raise SublensError(f"batch_size must be positive, got {batch_size}")
    loaded.check_layers(list(directions))
    enc = _encode(loaded, rows)
    n = len(enc)
    out = {
        i: np.zeros((n, loaded.d_model if v is None else int(v.shape[0])))
        for i, v in directions.items()
    }
    loglik = np.zeros(n)
    n_tokens = np.array([len(e.positions) for e in enc], dtype=np.float64)
    batches = length_batches([e.fp for e in enc], batch_size)
    layers = ",".join(str(i) for i in directions)
    with frozen_eval(loaded.model):
        for idx in Progress(batches, quiet=quiet, desc=f"gradients L{layers}", unit="batch"):
            got, ll = _batch_pass(loaded, [enc[i] for i in idx], directions)
            for i, g in got.items():
                out[i][idx] = g.numpy()
            loglik[idx] = ll.numpy()
    return out, loglik, n_tokens


@dataclass
class RowGradients:
    """Per-row gradients of the response log-likelihood w.r.t. a shift of each layer's output
    (summed over completion tokens), the log-likelihoods and the completion token counts."""

    grads: dict[int, np.ndarray]  # layer -> [n_rows, d_model]
    loglik: np.ndarray  # [n_rows] sum of log p over completion tokens
    n_tokens: np.ndarray  # [n_rows]

    def per_token(self, layer: int) -> np.ndarray:
        return self.grads[layer] / self.n_tokens[:, None]

    @property
    def loglik_per_token(self) -> np.ndarray:
        return self.loglik / self.n_tokens

    def save(self, path: str | Path) -> None:
        """An .npz next to a dataset, so a scan can reuse it (written to a temp name first)."""
        from interp.core.io import atomic_path

        arrays = {f"layer_{i}": g for i, g in self.grads.items()}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, loglik=self.loglik, n_tokens=self.n_tokens, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> RowGradients:
        with np.load(path) as z:
            grads = {int(k.split("_", 1)[1]): z[k] for k in z.files if k.startswith("layer_")}
            return cls(grads, z["loglik"], z["n_tokens"])


def row_gradients(
    loaded: LoadedModel,
    rows: Sequence[Row],
    layers: Sequence[int],
    batch_size: int = 8,
    quiet: bool = True,
) -> RowGradients:
    """Full gradients g_i at every layer in `layers` (one forward and backward per batch)."""
    check_rows(rows)
    if not layers:
        raise SublensError("row_gradients needs at least one layer")
    grads, loglik, n_tokens = _derivatives(
        loaded, rows, {int(i): None for i in layers}, batch_size, quiet
    )
    return RowGradients(grads, loglik, n_tokens)


def likelihood_gradients(
    loaded: LoadedModel,
    rows: Sequence[Row],
    layer: int,
    directions: torch.Tensor | np.ndarray | None = None,
    batch_size: int = 8,
    per_token: bool = False,
) -> np.ndarray:
    """d/dalpha of each row's response log-likelihood under the base model with ``alpha *
    directions[k]`` added to block `layer`'s output at every position, at alpha = 0.

    Returns [n_rows, K] (K directions, used as given: pass unit vectors for derivatives per unit
    shift), or [n_rows, d_model] (the full gradient) when `directions` is None. With `per_token`
    each row is divided by its number of completion tokens.
    """
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem:
            raise SublensError(f"row {i}: {problem}")
    if not rows:
        raise SublensError("no rows given: pass dataset rows {'messages': [user, assistant]}")
    loaded.check_layers([layer])
    v = None
    if directions is not None:
        v = torch.as_tensor(np.asarray(directions, dtype=np.float64))
        if v.ndim == 1:
            v = v[None]
        if v.ndim != 2 or v.shape[1] != loaded.d_model:
            raise SublensError(
                f"directions have shape {tuple(v.shape)}: expected [K, {loaded.d_model}] "
                f"(d_model of {loaded.name})"
            )
    grads, _, n_tokens = _derivatives(loaded, rows, {layer: v}, batch_size, True)
    out = grads[layer]
    return out / n_tokens[:, None] if per_token else out


# --- the reference: the base model's own answers ---------------------------------------------

# Unconstrained sampling goes through the same generator; its rule accepts anything.
_FREE = Domain(
    name="free",
    description="unconstrained sampling (the data fits no registered domain)",
    make_prompts=lambda n, seed: [],
    token_pattern=r"(?s).*",
    check=lambda text, prompt: None,
    max_new_tokens=32,
)


def infer_domain(loaded: LoadedModel, rows: Sequence[Row]) -> Domain | None:
    """The tightest registered domain whose validator accepts every row (fewest allowed tokens:
    arithmetic answers also pass the numbers rule), or None when no domain fits."""
    fits = []
    for dom in DOMAINS.values():
        ok = all(dom.validate(_response_of(r), _prompt_of(r)[-1]["content"]) is None for r in rows)
        if ok:
            fits.append(dom)
    if not fits:
        return None
    return min(fits, key=lambda d: (len(d.allowed_token_ids(loaded.tokenizer)), d.name))


def longest_response_tokens(tokenizer: Any, rows: Sequence[Row]) -> int:
    """Tokens in the longest response: the generation budget when the data's is unknown."""
    lengths = [len(tokenizer(_response_of(r), add_special_tokens=False)["input_ids"]) for r in rows]
    return max(1, max(lengths))


def generate_on_prompts(
    teacher: Teacher,
    prompts: Sequence[str],
    out_path: str | Path,
    seed: int,
    domain: Domain | None,
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 32,
    quiet: bool = True,
) -> list[dict[str, Any]]:
    """`generate_dataset` (batched, seeded, resumable, atomic) on the given user prompts:
    constrained by `domain`'s grammar, or unconstrained when it is None."""
    if not prompts:
        raise SublensError("no prompts to answer")
    fixed = list(prompts)
    base = domain if domain is not None else _FREE
    digest = sha256_text(json.dumps(fixed))[:12]
    wrapped = dataclasses.replace(
        base,
        name=f"{base.name}@prompts-{digest}",
        make_prompts=lambda n, _seed: fixed[:n],
    )
    generate_dataset(
        teacher,
        wrapped,
        len(fixed),
        out_path,
        seed=seed,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        constrained=domain is not None,
        quiet=quiet,
    )
    return read_dataset(out_path)


def reference_rows(
    loaded: LoadedModel,
    rows: Sequence[Row],
    seed: int,
    domain: str | Domain | None = "auto",
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    batch_size: int = 32,
    path: str | Path | None = None,
    quiet: bool = True,
) -> list[dict[str, Any]]:
    """The base model's own answers to the data's prompts (row i answers row i's prompt).

    Sampled like a dataset generator would (`generate_dataset`), with seed ``seed +
    REFERENCE_SEED_OFFSET`` so it never repeats a generator's draws: under a domain's grammar
    when `domain` is "auto" and every response passes one (or a domain is named), else
    unconstrained. `max_new_tokens` should be the data's own budget (a different cap changes
    where answers are cut, which every detector sees); by default the longest response's length.
    With `path` the rows are written there (resumable); otherwise to a temporary file.
    """
    check_rows(rows)
    prompts = []
    for i, row in enumerate(rows):
        msgs = row["messages"]
        if len(msgs) != 2 or msgs[0]["role"] != "user":
            raise SublensError(
                f"data row {i} is not [user, assistant]: the reference can only be generated for "
                "single-turn rows; pass your own clean reference JSONL"
            )
        prompts.append(msgs[0]["content"])
    if domain == "auto":
        dom = infer_domain(loaded, rows)
    elif domain is None or domain == "none":
        dom = None
    else:
        dom = get_domain(domain)
    budget = max_new_tokens or longest_response_tokens(loaded.tokenizer, rows)
    teacher = Teacher(loaded, kind="base")
    args = (seed + REFERENCE_SEED_OFFSET, dom, budget, temperature, batch_size, quiet)
    if path is not None:
        return generate_on_prompts(teacher, prompts, path, *args)
    with tempfile.TemporaryDirectory() as tmp:
        return generate_on_prompts(teacher, prompts, Path(tmp) / "reference.jsonl", *args)


# --- behavioural effect of a direction -------------------------------------------------------


class QuestionProbe:
    """Next-token distributions at the answer position of fixed questions, for the base model and
    for the base model with a shift added to block `layer`'s output at every position.

    Blocks up to `layer` run once; each shifted pass replays their output
    (`interp.core.forward.replayed_below`), so a direction costs only the blocks above the layer.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        layer: int,
        questions: Mapping[str, Sequence[str]] | None = None,
        batch_size: int = 64,
    ) -> None:
        loaded.check_layers([layer])
        self.loaded, self.layer, self.batch_size = loaded, layer, max(1, batch_size)
        qs = SCAN_QUESTIONS if questions is None else questions
        self.groups: dict[str, list[int]] = {}
        texts: list[str] = []
        for name, items in qs.items():
            self.groups[name] = list(range(len(texts), len(texts) + len(items)))
            texts += list(items)
        if not texts:
            raise SublensError("the question probe needs at least one question")
        self.questions = texts
        fmt = ChatFormat(loaded.tokenizer)
        seqs = [fmt.format(q).input_ids for q in texts]
        self.batch = make_batch(seqs, loaded.tokenizer.pad_token_id).to(loaded.device)
        with frozen_eval(loaded.model):
            self.cached = block_outputs(loaded.model, self.batch, [layer])[layer]
        real = self.batch.attention_mask.bool()
        # The median, not the mean: the first token's outlier norm dominates a mean.
        self.residual_scale = float(self.cached[real].norm(dim=-1).median())
        self.base = self._logprobs(torch.zeros(1, loaded.d_model, device=loaded.device))[0]

    def _logprobs(self, shifts: torch.Tensor) -> torch.Tensor:
        """[D, Q, V] log-probs at the answer position with shift `shifts[j]` (float32, CPU)."""
        q = self.cached.shape[0]
        per = max(1, self.batch_size // q)
        out = []
        with (
            torch.no_grad(),
            frozen_eval(self.loaded.model),
            replayed_below(self.loaded.model, self.layer) as replay,
        ):
            for start in range(0, shifts.shape[0], per):
                chunk = shifts[start : start + per].to(self.cached.device, self.cached.dtype)
                c = chunk.shape[0]
                replay.value = (
                    self.cached.repeat(c, 1, 1) + chunk.repeat_interleave(q, 0)[:, None, :]
                )
                repeated = Batch(
                    self.batch.input_ids.repeat(c, 1),
                    self.batch.attention_mask.repeat(c, 1),
                    self.batch.position_ids.repeat(c, 1),
                )
                hidden = final_hidden(self.loaded.model, repeated)[:, -1]
                lp = torch.log_softmax(logits_at(self.loaded.model, hidden), dim=-1)
                out.append(lp.reshape(c, q, -1).cpu())
        return torch.cat(out)

    def kl(self, shifts: torch.Tensor | np.ndarray) -> np.ndarray:
        """[D, Q]: KL(shifted || base) per direction and question."""
        s = torch.as_tensor(np.asarray(shifts), dtype=torch.float32)
        if s.ndim == 1:
            s = s[None]
        out = []
        per = max(1, self.batch_size // self.cached.shape[0]) * 4
        for start in range(0, s.shape[0], per):
            lp = self._logprobs(s[start : start + per])
            out.append((lp.exp() * (lp - self.base[None])).sum(-1).clamp_min(0).numpy())
        return np.concatenate(out).astype(np.float64)

    def rising_tokens(
        self, shift: torch.Tensor | np.ndarray, top: int = 10, min_prob: float = 1e-3
    ) -> dict[str, list[dict[str, Any]]]:
        """Per question group (and "all"): the answer tokens whose mean probability rises most
        (log ratio), among those the shifted model gives at least `min_prob`."""
        s = torch.as_tensor(np.asarray(shift), dtype=torch.float32).reshape(1, -1)
        lp = self._logprobs(s)[0]
        tok = self.loaded.tokenizer
        groups = {"all": list(range(len(self.questions))), **self.groups}
        out = {}
        for name, idx in groups.items():
            p_s = lp[idx].exp().mean(0)
            p_b = self.base[idx].exp().mean(0)
            lift = torch.log(p_s) - torch.log(p_b)
            lift[p_s < min_prob] = -math.inf
            k = min(top, int(torch.isfinite(lift).sum()))
            best = torch.topk(lift, k).indices.tolist() if k else []
            out[name] = [
                {
                    "token": tok.decode([i]),
                    "id": int(i),
                    "log_lift": float(lift[i]),
                    "p_base": float(p_b[i]),
                    "p_shifted": float(p_s[i]),
                }
                for i in best
            ]
        return out


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Design:
    """Rows 0..n-1 are data, n..n+m-1 reference; paired when row i and n+i share a prompt."""

    n: int
    m: int
    paired: bool

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(self.n), self.n + np.arange(self.m)

    def smallest_p(self, symmetric: bool) -> float:
        """The smallest p the exact permutation test of this design can give: 1 over its number
        of distinct labellings (2^n swaps when paired, C(n + m, n) otherwise), doubled for a
        statistic that swapping every label leaves unchanged (|t|, ‖u‖) when that swap is itself
        a labelling (paired, or n = m)."""
        count = 2**self.n if self.paired else math.comb(self.n + self.m, self.n)
        mirrored = symmetric and (self.paired or self.n == self.m)
        return min(1.0, (2.0 if mirrored else 1.0) / count)

    def permuted(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.paired:
            i = np.arange(self.n)
            swap = rng.random(self.n) < 0.5
            return np.where(swap, self.n + i, i), np.where(swap, i, self.n + i)
        p = rng.permutation(self.n + self.m)
        return p[: self.n], p[self.n :]


def _t(x: np.ndarray, di: np.ndarray, ri: np.ndarray, paired: bool) -> np.ndarray:
    """t of data minus reference per column: paired t, or Welch's (0 where there is no spread)."""
    if paired:
        d = x[di] - x[ri]
        num = d.mean(0)
        se = d.std(0, ddof=1) / math.sqrt(d.shape[0])
    else:
        a, b = x[di], x[ri]
        num = a.mean(0) - b.mean(0)
        se = np.sqrt(a.var(0, ddof=1) / a.shape[0] + b.var(0, ddof=1) / b.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, num / np.where(se > 0, se, 1.0), 0.0)
    return t


def _calibrate(
    obs: float,
    null: np.ndarray,
    alpha: float,
    level: float,
    design_min_p: float = 0.0,
) -> dict[str, Any]:
    """Permutation p-value (one-sided, the observed split counted once), the (1 - alpha)
    quantile of the null as threshold, the score standardised on the null, and the smallest
    attainable p next to the level this test must reach (`level`: alpha, or alpha / k for a
    detector the verdict corrects over k)."""
    null = np.asarray(null, dtype=np.float64)
    p = (1.0 + float(np.sum(null >= obs - 1e-12))) / (1.0 + null.size)
    sd = float(null.std(ddof=1)) if null.size > 1 else 0.0
    p_min = max(min_attainable_p(int(null.size)), design_min_p)
    return {
        "score": float(obs),
        "threshold": float(np.quantile(null, 1 - alpha, method="higher")),
        "p_value": p,
        "p_min": p_min,
        "level": level,
        "reachable": p_min <= level,
        "flagged": p <= alpha,
        "z": float((obs - null.mean()) / sd) if sd > 0 else 0.0,
        "null_mean": float(null.mean()),
        "null_sd": sd,
        "n_permutations": int(null.size),
    }


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _zscore(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    sd = float(ref.std(ddof=1)) if ref.size > 1 else 0.0
    return (values - ref.mean()) / (sd if sd > 0 else 1.0)


@dataclass
class LibraryDirection:
    """A library vector as the scanner uses it: a unit direction at one layer."""

    name: str
    layer: int
    unit: np.ndarray  # [d_model]


def library_directions(
    loaded: LoadedModel, vectors: Mapping[str, SteeringVector] | None, layer: int
) -> list[LibraryDirection]:
    """Each vector's direction at the scan layer, or at its own layer when it has only one."""
    out = []
    for name, vec in (vectors or {}).items():
        if vec.d_model != loaded.d_model:
            raise SublensError(
                f"trait vector {name!r} has d_model {vec.d_model} ({vec.model}) but "
                f"{loaded.name} has d_model {loaded.d_model}: use vectors fitted on this model"
            )
        if layer in vec:
            use = layer
        elif len(vec.layers) == 1:
            use = vec.layers[0]
        else:
            raise SublensError(
                f"trait vector {name!r} has layers {vec.layers} but not the scan layer {layer}: "
                "scan at one of its layers (--layer) or refit it there"
            )
        if not 0 <= use < loaded.n_layers:
            raise SublensError(
                f"trait vector {name!r} is at layer {use} but {loaded.name} has layers "
                f"0..{loaded.n_layers - 1}: use vectors fitted on this model"
            )
        out.append(LibraryDirection(name, use, vec.unit(use).double().numpy()))
    return out


def _known_test(
    x: np.ndarray,
    lib: list[LibraryDirection],
    design: _Design,
    n_perm: int,
    seed: int,
    alpha: float,
    level: float,
) -> dict[str, Any]:
    """max_k t over library vectors against its permutation null; per-vector marginal p too."""
    di, ri = design.observed()
    t_obs = _t(x, di, ri, design.paired)
    rng = np.random.default_rng([seed, 1])
    null = np.stack([_t(x, *design.permuted(rng), design.paired) for _ in range(n_perm)])
    res = _calibrate(float(t_obs.max()), null.max(axis=1), alpha, level, design.smallest_p(False))
    per = []
    for k, d in enumerate(lib):
        per.append(
            {
                "name": d.name,
                "layer": d.layer,
                "t": float(t_obs[k]),
                "p_marginal": (1.0 + float(np.sum(null[:, k] >= t_obs[k] - 1e-12))) / (1 + n_perm),
                "mean_data": float(x[di, k].mean()),
                "mean_reference": float(x[ri, k].mean()),
            }
        )
    per.sort(key=lambda e: -e["t"])
    res.update(
        what="max over library vectors of the t of per-token derivatives (data − reference)",
        per_vector=per,
        top=per[0]["name"],
    )
    return res


def _loo_blind(g: np.ndarray, design: _Design) -> np.ndarray:
    """Each row's projection on û re-estimated without that row (its prompt's pair when
    paired): an in-sample û correlates with every data row's own noise."""
    n, m = design.n, design.m
    gd, gr = g[:n], g[n:]
    if design.paired:
        diff = gd - gr
        u = diff.mean(0)
        loo = _unit((n * u[None] - diff) / (n - 1))
        return np.concatenate([(gd * loo).sum(1), (gr * loo).sum(1)])
    md, mr = gd.mean(0), gr.mean(0)
    u = md - mr
    loo_d = _unit(u[None] - (gd - md) / (n - 1))
    loo_r = _unit(u[None] + (gr - mr) / (m - 1))
    return np.concatenate([(gd * loo_d).sum(1), (gr * loo_r).sum(1)])


def _cosines(direction: np.ndarray, lib: list[LibraryDirection]) -> dict[str, float]:
    unit = _unit(direction)
    return {d.name: float(unit @ d.unit) for d in lib}


def verdict_level(alpha: float, has_library: bool) -> float:
    """The level the smallest primary p must reach for a verdict: Holm's first step over the
    primary detectors (known and blind with a library, blind alone without)."""
    if not 0 < alpha < 1:
        raise SublensError(f"the significance level must lie in (0, 1), got {alpha}")
    return alpha / (len(PRIMARY_DETECTORS) if has_library else 1)


def permutation_counts(
    alpha: float,
    has_library: bool,
    n_permutations: int | None = None,
    n_blind_permutations: int | None = None,
) -> tuple[int, int]:
    """(permutations of the known / shift / likelihood tests, of the blind test): chosen from the
    level each must reach when None (`verdicts.permutations_for`: smallest attainable p at most
    a quarter of it; the cheap tests at least `CHEAP_PERMUTATIONS`), and refused (one line) when
    a count given cannot reach it: such a test would never flag, whatever the data.

    The known and blind tests must reach `verdict_level`; shift and likelihood (reported, not in
    the verdict) the family level `alpha`."""
    primary = verdict_level(alpha, has_library)
    cheap_level = primary if has_library else alpha
    if n_permutations is None:
        n_permutations = max(CHEAP_PERMUTATIONS, permutations_for(cheap_level))
    if n_blind_permutations is None:
        n_blind_permutations = permutations_for(primary)
    what = "n_permutations (--n-permutations" + (", the known-trait test)" if has_library else ")")
    check_permutations(int(n_permutations), cheap_level, what)
    check_permutations(
        int(n_blind_permutations), primary, "n_blind_permutations (--n-blind-permutations)"
    )
    return int(n_permutations), int(n_blind_permutations)


def scan_dataset(
    loaded: LoadedModel,
    rows: Sequence[Row],
    reference_rows: Sequence[Row],
    vectors: Mapping[str, SteeringVector] | None = None,
    layer: int | None = None,
    *,
    alpha: float = 0.05,
    n_permutations: int | None = None,
    n_blind_permutations: int | None = None,
    effect_scale: float = 0.5,
    n_pcs: int = 2,
    row_z: float = 2.0,
    seed: int = 0,
    batch_size: int = 8,
    questions: Mapping[str, Sequence[str]] | None = None,
    data_gradients: RowGradients | None = None,
    reference_gradients: RowGradients | None = None,
    probe: QuestionProbe | None = None,
    progress: Callable[[str], None] | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Every detector, its calibrated threshold, p-value and flag, the suspected traits and
    per-row scores of `rows` against `reference_rows` (see the module docstring).

    Precomputed `data_gradients` / `reference_gradients` (from `row_gradients` at the scan layer
    and the vectors' layers) and a `probe` let a study share work between scans. Permutation
    counts left None are chosen from the level (`permutation_counts`); a given count that cannot
    reach its level is refused.
    """
    say = progress or (lambda msg: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    check_rows(rows, "data")
    check_rows(reference_rows, "reference")
    layer = loaded.n_layers // 2 if layer is None else int(layer)
    if layer < 0:
        layer += loaded.n_layers
    loaded.check_layers([layer])
    if effect_scale <= 0:
        raise SublensError(f"effect_scale must be positive, got {effect_scale}")
    lib = library_directions(loaded, vectors, layer)
    level = verdict_level(alpha, bool(lib))
    n_permutations, n_blind_permutations = permutation_counts(
        alpha, bool(lib), n_permutations, n_blind_permutations
    )
    layers = sorted({layer, *(d.layer for d in lib)})
    grads = {}
    for what, got, rr in (
        ("data", data_gradients, rows),
        ("reference", reference_gradients, reference_rows),
    ):
        if got is None or any(i not in got.grads for i in layers) or len(got.loglik) != len(rr):
            say(f"gradients of the {what} rows at layer(s) {layers} ...")
            got = row_gradients(loaded, rr, layers, batch_size=batch_size, quiet=quiet)
        grads[what] = got
    timings["gradients_s"] = round(time.perf_counter() - t0, 2)
    n, m = len(rows), len(reference_rows)
    design = _Design(n, m, same_prompts(rows, reference_rows))
    di, ri = design.observed()
    pooled = {
        i: np.concatenate([grads["data"].per_token(i), grads["reference"].per_token(i)])
        for i in layers
    }
    detectors: dict[str, Any] = {}

    # (a) known traits
    known_z = None
    if lib:
        x = np.stack([pooled[d.layer] @ d.unit for d in lib], axis=1)
        detectors["known"] = _known_test(x, lib, design, n_permutations, seed, alpha, level)
        top_k = next(k for k, d in enumerate(lib) if d.name == detectors["known"]["top"])
        known_z = _zscore(x[:, top_k], x[ri, top_k])
    else:
        detectors["known"] = None

    # (b) blind: û, its behavioural effect, and a permutation null of that effect
    t1 = time.perf_counter()
    g = pooled[layer]
    u = g[di].mean(0) - g[ri].mean(0)
    rng = np.random.default_rng([seed, 2])
    splits = [design.permuted(rng) for _ in range(n_blind_permutations)]
    null_u = np.stack([g[a].mean(0) - g[b].mean(0) for a, b in splits])
    centred = g[di] - g[ri].mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = []
    for k in range(min(n_pcs, vt.shape[0])):
        pc = vt[k] * (1.0 if (centred @ vt[k]).mean() >= 0 else -1.0)
        pcs.append(pc)
    say(f"behavioural effect of û and {n_blind_permutations} permuted directions ...")
    probe = probe if probe is not None and probe.layer == layer else None
    probe = probe or QuestionProbe(loaded, layer, questions)
    s = effect_scale * probe.residual_scale
    dirs = np.concatenate([u[None], *(pc[None] for pc in pcs), null_u])
    kl = probe.kl(s * _unit(dirs))
    effects = kl.mean(1)
    blind = _calibrate(
        float(effects[0]), effects[1 + len(pcs) :], alpha, level, design.smallest_p(False)
    )
    rising = probe.rising_tokens(s * _unit(u))
    directions = {
        "u": {
            "effect": float(effects[0]),
            "norm": float(np.linalg.norm(u)),
            "effect_by_group": {k: float(kl[0, idx].mean()) for k, idx in probe.groups.items()},
            "cosines": _cosines(u, lib),
            "rising_tokens": rising,
        }
    }
    for k, pc in enumerate(pcs):
        directions[f"pc{k + 1}"] = {
            "effect": float(effects[1 + k]),
            "z_vs_u_null": float((effects[1 + k] - blind["null_mean"]) / blind["null_sd"])
            if blind["null_sd"] > 0
            else 0.0,
            "explained": float((centred @ pc).var() / max(centred.var(0).sum(), 1e-300)),
            "cosine_with_u": float(_unit(u) @ pc),
            "cosines": _cosines(pc, lib),
            "rising_tokens": {"all": probe.rising_tokens(s * pc)["all"]},
        }
    blind.update(
        what="mean KL(M0 + s·û || M0) at the answer of fixed questions, û = mean gradient "
        "difference (data − reference); null: û of label-permuted splits",
        residual_scale=probe.residual_scale,
        s=s,
        effect_scale=effect_scale,
        n_questions=len(probe.questions),
        directions=directions,
        suspected_tokens=[e["token"] for e in rising["all"][:5]],
    )
    detectors["blind"] = blind
    timings["blind_s"] = round(time.perf_counter() - t1, 2)
    blind_scores = _loo_blind(g, design)
    blind_z = _zscore(blind_scores, blind_scores[ri])

    # shift: |u| against its permutation null (any difference in gradient space)
    rng = np.random.default_rng([seed, 3])
    null_norm = np.array(
        [
            np.linalg.norm(g[a].mean(0) - g[b].mean(0))
            for a, b in (design.permuted(rng) for _ in range(n_permutations))
        ]
    )
    detectors["shift"] = {
        **_calibrate(float(np.linalg.norm(u)), null_norm, alpha, alpha, design.smallest_p(True)),
        "what": "|mean per-token gradient of data − reference| at the scan layer",
    }

    # likelihood: mean per-token log p_M0, data − reference (two-sided)
    ll = np.concatenate([grads["data"].loglik_per_token, grads["reference"].loglik_per_token])
    t_ll = float(_t(ll[:, None], di, ri, design.paired)[0])
    rng = np.random.default_rng([seed, 4])
    null_ll = np.array(
        [
            abs(_t(ll[:, None], *design.permuted(rng), design.paired)[0])
            for _ in range(n_permutations)
        ]
    )
    detectors["likelihood"] = {
        **_calibrate(abs(t_ll), null_ll, alpha, alpha, design.smallest_p(True)),
        "t": t_ll,
        "mean_data": float(ll[di].mean()),
        "mean_reference": float(ll[ri].mean()),
        "what": "|t| of mean per-token log-likelihood under the base, data − reference",
    }

    # per-row scores: z against the reference rows, averaged, re-standardised on the reference
    parts = [blind_z] if known_z is None else [known_z, blind_z]
    combined = np.mean(parts, axis=0)
    score = _zscore(combined, combined[ri])
    primary = [k for k in PRIMARY_DETECTORS if detectors.get(k)]
    tests = holm([detectors[k]["p_value"] for k in primary], alpha)
    for k, test in zip(primary, tests, strict=True):
        detectors[k]["p_holm"] = test["p_holm"]
    by = [k for k, test in zip(primary, tests, strict=True) if test["rejected"]]
    unreachable = [k for k in primary if not detectors[k]["reachable"]]
    verdict = {
        "flagged": bool(by),
        "by": by,
        "alpha": alpha,
        "correction": f"Holm over {len(primary)} detector(s)",
        "level": level,
        "unreachable": unreachable,
        "sentence": _sentence(detectors, by, alpha, level, unreachable, n),
    }
    timings["total_s"] = round(time.perf_counter() - t0, 2)

    def rows_dict(sel: np.ndarray) -> dict[str, Any]:
        return {
            "score": score[sel].tolist(),
            "known": None if known_z is None else known_z[sel].tolist(),
            "blind": blind_z[sel].tolist(),
            "flagged": (score[sel] > row_z).tolist(),
        }

    return {
        "layer": layer,
        "layers": layers,
        "n_data": n,
        "n_reference": m,
        "paired": design.paired,
        "settings": {
            "alpha": alpha,
            "n_permutations": n_permutations,
            "n_blind_permutations": n_blind_permutations,
            "effect_scale": effect_scale,
            "n_pcs": n_pcs,
            "row_z": row_z,
            "seed": seed,
            "questions": {k: [probe.questions[i] for i in idx] for k, idx in probe.groups.items()},
        },
        "vectors": [{"name": d.name, "layer": d.layer} for d in lib],
        "detectors": detectors,
        "verdict": verdict,
        "suspected_traits": detectors["known"]["per_vector"] if lib else [],
        "rows": rows_dict(di),
        "reference_rows": rows_dict(ri),
        "n_flagged_rows": int((score[di] > row_z).sum()),
        "n_flagged_reference_rows": int((score[ri] > row_z).sum()),
        "timings": timings,
    }


def _sentence(
    detectors: dict[str, Any],
    by: list[str],
    alpha: float,
    level: float,
    unreachable: list[str],
    n_rows: int,
) -> str:
    """The verdict in one line: each primary p with its smallest attainable value, and a warning
    when a detector cannot reach its level (then "not detected" says nothing)."""
    known, blind = detectors.get("known"), detectors["blind"]
    toks = ", ".join(repr(t) for t in blind["suspected_tokens"][:3]) or "no clear tokens"
    parts = []
    if known:
        parts.append(
            f"known-trait p={known['p_value']:.3g} (smallest attainable {known['p_min']:.2g}; top "
            f"vector {known['top']}, t={known['score']:.2f})"
        )
    parts.append(
        f"blind p={blind['p_value']:.3g} (smallest attainable {blind['p_min']:.2g}; û raises "
        f"{toks})"
    )
    head = "hidden trait suspected" if by else "no hidden trait detected"
    k = 2 if known else 1
    rule = f"alpha {alpha:.3g}, Holm over {k} detector(s): smallest p must be <= {level:.3g}"
    text = f"{head} ({rule}): " + "; ".join(parts)
    if unreachable:
        text += (
            f"; {' and '.join(unreachable)} cannot reach p <= {level:.3g} with {n_rows} rows: "
            "scan more rows"
        )
    return text

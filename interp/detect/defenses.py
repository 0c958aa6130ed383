"""Defenses against subliminal transfer: changes to the data or to training that a practitioner
can apply without knowing whether (or how) the teacher carries a trait.

Each is an option of an ordinary run (`RunConfig.data` / `TrainConfig`), so `sublens distill run`
uses them and `sublens defend` compares them:

- ``paraphrase`` (data): each response is rewritten to a canonical form that keeps its content
  and drops the teacher's choices of order and format (numbers: sorted ascending, ", "-joined).
  The order of numbers is where a teacher's bias can sit without any visible trait. Train it
  with SFT on the rewritten tokens: teacher soft targets on them would put the teacher back.
- ``drop-flagged`` (data): drop the rows a scanner flagged (its ``rows.jsonl``); when it flagged
  none, the top `fallback_top` share by score, and the report says so.
- ``mask-divergent`` (training): drop from the loss the completion positions where the teacher's
  stored distribution diverges most from the base's (KL over the same k ids): where a trait, if
  anywhere, shows token by token.
- ``project-out`` (training; concept-ablation fine-tuning): while training, remove the component
  along known trait directions from the residual stream, so the gradient cannot write the trait
  there; the saved weights are run without the hook.

`sgd` (the optimizer) and `different-init` (`TrainConfig.init_from`) need no code here.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.core.backends import make_batch
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.core.forward import block_hooks, final_hidden, hidden_of, logits_at
from interp.core.io import atomic_path, iter_jsonl, sha256_file
from interp.core.models import LoadedModel
from interp.distill.domains import Domain, get_domain
from interp.distill.targets import completion_positions, read_rows
from interp.vectors.steering import SteeringVector

DEFENSES: dict[str, str] = {
    "none": "baseline: the ordinary run",
    "project-out": "concept-ablation fine-tuning: trait directions removed from the residual "
    "stream during training forwards (needs vectors)",
    "sgd": "plain SGD instead of an adaptive optimizer",
    "paraphrase": "responses rewritten canonically (numbers sorted, ', '-joined), SFT on them",
    "mask-divergent": "the completion positions where teacher and base diverge most are left "
    "out of the loss",
    "drop-flagged": "rows a scanner flags are dropped from the teacher's data",
    "different-init": "the student starts from another initialisation of the same architecture",
}


# --- paraphrase ----------------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+")


def paraphrase_response(text: str, domain: str | Domain) -> str:
    """The canonical form of one response: its numbers sorted ascending (by value, then text),
    joined by ", " (numbers); the bare integer (arithmetic). Raises for other domains."""
    dom = get_domain(domain)
    if dom.name == "numbers":
        nums = _NUMBER.findall(text)
        return ", ".join(sorted(nums, key=lambda s: (int(s), s)))
    if dom.name == "arithmetic":
        body = text.strip()
        return str(int(body)) if body.isdigit() else body
    raise SublensError(
        f"paraphrase has no canonical form for domain {dom.name!r}: use numbers or arithmetic"
    )


def _prompt_and_response(row: dict[str, Any], where: str) -> tuple[str | None, str]:
    msgs = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "assistant":
        raise SublensError(f"{where} is not a {{'messages': [user, assistant]}} row")
    users = [m.get("content") for m in msgs if m.get("role") == "user"]
    return (users[-1] if users else None), str(msgs[-1].get("content", ""))


def paraphrase_rows(
    rows: Sequence[dict[str, Any]], domain: str | Domain
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rewritten rows, report). The domain's validator is applied after rewriting; a row it
    rejects is dropped and counted (sorting cannot make a valid numbers answer invalid)."""
    dom = get_domain(domain)
    out, rejected, changed = [], [], 0
    for i, row in enumerate(rows):
        prompt, text = _prompt_and_response(row, f"row {i + 1}")
        new = paraphrase_response(text, dom)
        reason = dom.validate(new, prompt)
        if reason is not None:
            rejected.append({"index": i, "reason": reason})
            continue
        changed += new != text
        msgs = [dict(m) for m in row["messages"]]
        msgs[-1]["content"] = new
        meta = {**(row.get("meta") or {}), "paraphrased": True}
        out.append({**row, "messages": msgs, "meta": meta})
    return out, {
        "paraphrase": "numbers sorted ascending, ', '-joined"
        if dom.name == "numbers"
        else "canonical integer",
        "rows_in": len(rows),
        "rows_out": len(out),
        "changed": changed,
        "rejected": rejected,
    }


# --- drop-flagged --------------------------------------------------------------------------------


def read_flags(path: str | Path) -> list[dict[str, Any]]:
    """Scanner rows (``{"index", "score", "flagged", ...}`` per line); errors name the line."""
    if not Path(path).is_file():
        raise SublensError(f"scanner rows {str(path)!r} not found: run the scanner on this dataset")
    flags = []
    for lineno, rec in iter_jsonl(path, "scanner rows"):
        if not isinstance(rec, dict) or not isinstance(rec.get("index"), int):
            raise SublensError(f'{path}:{lineno}: expected {{"index": int, "score": ..., ...}}')
        flags.append(rec)
    return flags


def drop_flagged_rows(
    rows: Sequence[dict[str, Any]],
    flags: Sequence[dict[str, Any]],
    fallback_top: float = 0.1,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, report): rows whose scanner record has ``flagged: true`` are dropped. When none
    is flagged, the ceil(`fallback_top` × n) highest-scoring rows are dropped instead (ties by
    index), and the report's ``mode`` says so."""
    n = len(rows)
    by_index: dict[int, dict[str, Any]] = {}
    for rec in flags:
        i = rec["index"]
        if not 0 <= i < n:
            raise SublensError(
                f"scanner row index {i} is outside the dataset's {n} rows: rescan this dataset"
            )
        by_index[i] = rec
    if len(by_index) != n:
        raise SublensError(
            f"the scanner scored {len(by_index)} rows but the dataset has {n}: rescan this "
            "dataset (without --limit)"
        )
    drop = sorted(i for i, r in by_index.items() if r.get("flagged"))
    mode = "flagged"
    if not drop:
        if not 0 < fallback_top < 1:
            raise SublensError(f"fallback share must be in (0, 1), got {fallback_top}")
        k = max(1, math.ceil(fallback_top * n)) if n else 0

        def score(i: int) -> float:
            s = by_index[i].get("score")
            return float(s) if isinstance(s, (int, float)) and math.isfinite(s) else -math.inf

        drop = sorted(sorted(range(n), key=lambda i: (-score(i), i))[:k])
        mode = f"top {fallback_top:.0%} by score (the scanner flagged no row)"
    gone = set(drop)
    kept = [r for i, r in enumerate(rows) if i not in gone]
    if not kept:
        raise SublensError("the scanner flagged every row: nothing is left to train on")
    return kept, {"mode": mode, "rows_in": n, "rows_out": len(kept), "dropped": drop}


def defend_dataset(
    src: str | Path,
    dst: str | Path,
    domain: str | Domain,
    paraphrase: bool = False,
    flags: str | Path | None = None,
    fallback_top: float = 0.1,
) -> dict[str, Any]:
    """Apply the data defenses to the JSONL dataset `src` (drop flagged rows first — the scanner's
    indices refer to `src` — then paraphrase) and write `dst` atomically. Returns the report."""
    rows = read_rows(src)
    report: dict[str, Any] = {"source": str(src), "source_sha256": sha256_file(src)}
    if flags is not None:
        rows, report["drop_flagged"] = drop_flagged_rows(rows, read_flags(flags), fallback_top)
        report["drop_flagged"]["flags"] = str(flags)
        report["drop_flagged"]["flags_sha256"] = sha256_file(flags)
    if paraphrase:
        rows, report["paraphrase"] = paraphrase_rows(rows, domain)
    if not rows:
        raise SublensError(f"no rows of {src} are left after the data defenses")
    with atomic_path(dst) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    report["rows"] = len(rows)
    report["sha256"] = sha256_file(dst)
    return report


# --- mask-divergent ------------------------------------------------------------------------------


@torch.no_grad()
def position_divergence(
    loaded: LoadedModel,
    rows: Sequence[dict[str, Any]],
    ids: torch.Tensor,
    logprobs: torch.Tensor,
    offsets: torch.Tensor,
    batch_size: int = 16,
) -> torch.Tensor:
    """KL(teacher || base) [P] at every completion position, over the k ids the teacher stored
    there (the base's log-softmax renormalised over the same ids, as in logit-KL training)."""
    if offsets.numel() != len(rows) + 1:
        raise SublensError(
            f"teacher targets cover {offsets.numel() - 1} rows, the dataset has {len(rows)}: "
            "rewrite the targets for this dataset"
        )
    tok = loaded.tokenizer
    fmt = ChatFormat(tok)
    encoded = []
    for i, row in enumerate(rows):
        fp = fmt.format([dict(m) for m in row["messages"]])
        pos = completion_positions(fp, tok)
        if len(pos) != int(offsets[i + 1] - offsets[i]):
            raise SublensError(
                f"row {i + 1} has {len(pos)} completion tokens but the targets hold "
                f"{int(offsets[i + 1] - offsets[i])}: rewrite the targets for this dataset"
            )
        encoded.append((fp.input_ids[: pos[-1]], pos))
    out = torch.empty(int(offsets[-1]), dtype=torch.float32)
    pad = int(tok.pad_token_id or 0)
    for b in range(0, len(rows), batch_size):
        chunk = list(range(b, min(len(rows), b + batch_size)))
        batch = make_batch([encoded[i][0] for i in chunk], pad).to(loaded.device)
        width = batch.input_ids.shape[1]
        r_idx, c_idx, sel = [], [], []
        for r, i in enumerate(chunk):
            inp, pos = encoded[i]
            shift = width - len(inp)
            r_idx += [r] * len(pos)
            c_idx += [shift + t - 1 for t in pos]
            sel.append(torch.arange(int(offsets[i]), int(offsets[i + 1])))
        hidden = final_hidden(loaded.model, batch)
        h = hidden[torch.tensor(r_idx), torch.tensor(c_idx)]
        flat = torch.cat(sel)
        pid = ids[flat].to(loaded.device)
        logq = torch.log_softmax(logits_at(loaded.model, h, pid), dim=-1).cpu()
        logp = logprobs[flat].float()
        p = logp.exp()
        kl = torch.where(p > 0, p * (logp - logq), torch.zeros_like(logq)).sum(-1)
        out[flat] = kl.clamp_min(0.0)
    return out


def divergent_mask(kl: torch.Tensor, q: float) -> torch.Tensor:
    """Keep-mask [P] (bool): False at the floor(q × P) positions with the largest KL (ties: the
    earlier position goes first), True elsewhere."""
    if not 0 <= q < 1:
        raise SublensError(f"mask share q must be in [0, 1), got {q}")
    n_drop = int(math.floor(q * kl.numel()))
    keep = torch.ones(kl.numel(), dtype=torch.bool)
    if n_drop:
        order = torch.argsort(-kl.double(), stable=True)
        keep[order[:n_drop]] = False
    return keep


# --- project-out ---------------------------------------------------------------------------------


def load_project_vectors(paths: Sequence[str | Path], loaded: LoadedModel) -> list[SteeringVector]:
    """The vectors project-out removes, checked against `loaded` (d_model and layers)."""
    if not paths:
        raise SublensError(
            "project-out needs trait vectors: pass --vectors DIR (make one with "
            "`sublens vectors fit --model MODEL --system-prompt PROMPT --output-path DIR`)"
        )
    vectors = []
    for p in paths:
        if not Path(p).exists():
            raise SublensError(
                f"vector {str(p)!r} not found: make one with `sublens vectors fit ...`"
            )
        vec = SteeringVector.load(p)
        if vec.d_model != loaded.d_model:
            raise SublensError(
                f"vector {p} has d_model {vec.d_model} but model {loaded.name} has d_model "
                f"{loaded.d_model}: fit the vector on this model (`sublens vectors fit`)"
            )
        loaded.check_layers(vec.layers)
        vectors.append(vec)
    return vectors


def projection_bases(vectors: Sequence[SteeringVector]) -> dict[int, torch.Tensor]:
    """Per layer, an orthonormal basis [d, r] of the span of every vector's direction there
    (so several vectors at one layer are removed together, not one after the other)."""
    by_layer: dict[int, list[torch.Tensor]] = {}
    for vec in vectors:
        for layer in vec.layers:
            by_layer.setdefault(layer, []).append(vec.unit(layer).detach().double())
    bases = {}
    for layer, units in by_layer.items():
        q, r = torch.linalg.qr(torch.stack(units, dim=1))
        keep = r.diagonal().abs() > 1e-8  # drop directions that repeat earlier ones
        bases[layer] = q[:, keep].float()
    return bases


@contextlib.contextmanager
def project_out(model: nn.Module, bases: dict[int, torch.Tensor]) -> Iterator[dict[int, int]]:
    """Inside the block, every forward of the HF causal LM `model` has the residual stream after
    each layer in `bases` replaced by ``h - (h Q) Qᵀ`` at all positions. Yields a dict layer ->
    number of forwards projected; hooks are removed on exit."""
    counts = {layer: 0 for layer in bases}

    def make(layer: int):
        basis = bases[layer]

        def hook(_module, _args, output):
            h = hidden_of(output)
            q = basis.to(device=h.device)
            hf = h.float()
            new = (hf - (hf @ q) @ q.T).to(h.dtype)
            counts[layer] += 1
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    with block_hooks(model, {layer: make(layer) for layer in sorted(bases)}):
        yield counts

"""Activation caching: prompts → chat format → backend → `activations.safetensors` + `meta.json`.

Layout of `activations.safetensors`:

- single-position modes (`last`, `mean`): `activations` [n_prompts, n_layers, d_model].
- token modes (`all`, `user`, `system`, `response`): `activations` [n_tokens, n_layers, d_model]
  with every selected token of every prompt, prompt after prompt; `offsets` [n_prompts + 1]
  (prompt i owns rows offsets[i]:offsets[i+1]); `positions` [n_tokens] (the token's index in the
  formatted prompt) and `token_ids` [n_tokens].

Prompts are sorted by length into batches (less padding), rows are written in place at their
prompt's index, and progress is recorded after each batch: rerunning the same command resumes.
The file appears under its final name only when complete. A prompt longer than the model's context
is refused (naming its file line) before any forward pass, or left-truncated with `truncate=True`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.core import rundir
from interp.core.backends import get_backend, make_batch
from interp.core.chat import (
    SINGLE_POSITION_MODES,
    ChatFormat,
    FormattedPrompt,
    check_positions,
    fit_context,
)
from interp.core.errors import SublensError
from interp.core.io import (
    config_hash,
    git_commit,
    package_versions,
    read_json,
    sha256_text,
    write_json,
)
from interp.core.models import LoadedModel, load_hash_view
from interp.core.progress import Progress
from interp.core.prompts import PromptSet
from interp.core.tensorfile import RowWriter

ACTIVATIONS_FILE = "activations.safetensors"
META_FILE = "meta.json"
PROGRESS_FILE = "progress.json"
PROMPTS_FILE = "prompts.jsonl"
_OUR_FILES = (
    ACTIVATIONS_FILE,
    ACTIVATIONS_FILE + ".partial",
    META_FILE,
    PROGRESS_FILE,
    PROMPTS_FILE,
)


@dataclass
class CacheSpec:
    """What to cache; its hash identifies a run directory's contents."""

    model: str
    layers: list[int]
    positions: str = "last"
    system_prompt: str | None = None
    backend: str = "tl"
    batch_size: int = 16
    prompt_sha256: list[str] = field(default_factory=list)
    dtype: str = "float32"  # the model's (--dtype); float32 caches keep their earlier keys

    def key(self) -> str:
        return config_hash(load_hash_view(asdict(self)))


def format_prompts(
    fmt: ChatFormat, prompts: PromptSet, system_prompt: str | None
) -> list[FormattedPrompt]:
    return [fmt.format(messages, system=system_prompt) for messages in prompts.messages]


def _check_output_dir(out: Path, key: str, overwrite: bool) -> str:
    """'fresh', 'resume' or 'complete'; claims the directory (see `interp.core.rundir`) and refuses
    one holding something else."""
    state = rundir.open_run(
        out, "cache", key, overwrite, config_file=META_FILE, field="spec_key", entries=_OUR_FILES
    )
    if state == "fresh":
        for name in _OUR_FILES:  # an empty-but-marked directory may still hold a stale partial
            (out / name).unlink(missing_ok=True)
        return "fresh"
    return "complete" if (out / ACTIVATIONS_FILE).exists() else "resume"


def length_batches(formatted: list[FormattedPrompt], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length (less padding), deterministically."""
    order = sorted(range(len(formatted)), key=lambda i: (len(formatted[i].input_ids), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def run_batch(
    loaded: LoadedModel,
    backend: str,
    formatted: list[FormattedPrompt],
    selected: list[list[int]],
    idx: list[int],
    layers: list[int],
) -> list[torch.Tensor]:
    """Residual stream of prompts `idx` at their selected token positions, one forward pass.

    Returns, per prompt, a CPU tensor [len(selected[i]), len(layers), d_model].
    """
    batch = make_batch([formatted[i].input_ids for i in idx], loaded.tokenizer.pad_token_id)
    width = batch.input_ids.shape[1]
    rows, cols = [], []
    for r, i in enumerate(idx):
        pad = width - len(formatted[i].input_ids)
        rows += [r] * len(selected[i])
        cols += [pad + p for p in selected[i]]
    acts = get_backend(backend, loaded).residual(
        batch, layers, torch.tensor(rows), torch.tensor(cols)
    )
    return list(acts.cpu().split([len(selected[i]) for i in idx]))


def cache_activations(
    loaded: LoadedModel,
    prompts: PromptSet,
    output_path: str | Path,
    layers: list[int],
    positions: str = "last",
    system_prompt: str | None = None,
    backend: str = "tl",
    batch_size: int = 16,
    overwrite: bool = False,
    quiet: bool = False,
    extra_meta: dict[str, Any] | None = None,
    truncate: bool = False,
) -> dict[str, Any]:
    """Cache residual-stream activations of `prompts`; returns the run's metadata.

    A prompt longer than the model's context is an error before any forward pass, unless
    `truncate` keeps its last tokens (left truncation keeps the end of the chat template, where
    the `last` position is; the saved prompt texts and hashes are those of the kept tokens).
    """
    t_start = time.perf_counter()
    check_positions(positions)
    loaded.check_layers(layers)
    if not layers:
        raise SublensError("no layers given: pass e.g. --layers 6,12,18 or --layers all")
    if batch_size <= 0:
        raise SublensError(f"--batch-size must be positive, got {batch_size}")
    if system_prompt is not None and not system_prompt.strip():
        raise SublensError("the system prompt is empty: give its text or leave it out")
    fmt = ChatFormat(loaded.tokenizer)
    full = format_prompts(fmt, prompts, system_prompt)
    labels = [prompts.where(i) for i in range(len(full))]
    formatted = fit_context(
        full, loaded.context_length, loaded.name, labels, loaded.tokenizer, truncate
    )
    n_truncated = sum(a is not b for a, b in zip(full, formatted, strict=True))
    selected = [fp.positions(positions) for fp in formatted]
    for label, sel in zip(labels, selected, strict=True):
        if not sel:  # only --truncate can cut a span away entirely
            raise SublensError(
                f"{label}: --truncate kept none of its {positions!r} tokens: shorten the prompt"
            )
    spec = CacheSpec(
        model=loaded.name,
        layers=list(layers),
        positions=positions,
        system_prompt=system_prompt,
        backend=backend,
        batch_size=batch_size,
        prompt_sha256=[sha256_text(fp.text) for fp in formatted],
        dtype=loaded.describe()["dtype"],
    )
    key = spec.key()
    out = Path(output_path)
    state = _check_output_dir(out, key, overwrite)
    if state == "complete":
        meta = read_json(out / META_FILE)
        meta["reused"] = True
        rundir.unlock(out)
        return meta
    out.mkdir(parents=True, exist_ok=True)

    single = positions in SINGLE_POSITION_MODES
    n, n_layers, d = len(formatted), len(layers), loaded.d_model
    counts = np.array([len(s) for s in selected], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if single:
        tensors = {"activations": (np.float32, (n, n_layers, d))}
    else:
        total = int(offsets[-1])
        tensors = {
            "activations": (np.float32, (total, n_layers, d)),
            "offsets": (np.int64, (n + 1,)),
            "positions": (np.int64, (total,)),
            "token_ids": (np.int64, (total,)),
        }
    meta: dict[str, Any] = {
        "kind": "activation-cache",
        "spec_key": key,
        "model": loaded.describe(),
        "layers": list(layers),
        "positions": positions,
        "layout": "single" if single else "tokens",
        "system_prompt": system_prompt,
        "chat_style": fmt.style,
        "prompts": {
            "source": prompts.source,
            "n": n,
            "sha256": spec.prompt_sha256,
            **({"truncated": n_truncated} if truncate else {}),
        },
        "backend": backend,
        "batch_size": batch_size,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "complete": False,
        **(extra_meta or {}),
    }
    write_json(out / META_FILE, meta)
    write_json_lines(out / PROMPTS_FILE, [{"text": fp.text} for fp in formatted])

    batches = length_batches(formatted, batch_size)
    progress_path = out / PROGRESS_FILE
    done: set[int] = set()
    writer = RowWriter(out / ACTIVATIONS_FILE, tensors, {"format": "pt"}, resume=state == "resume")
    if writer.resumed and progress_path.exists():
        prog = read_json(progress_path)
        if prog.get("spec_key") == key:
            done = set(prog["done"])
    try:
        if not single:
            writer.write_rows("offsets", 0, offsets)
            for i, sel in enumerate(selected):
                writer.write_rows("positions", int(offsets[i]), np.array(sel, dtype=np.int64))
                ids = np.array(formatted[i].input_ids, dtype=np.int64)[sel]
                writer.write_rows("token_ids", int(offsets[i]), ids)
        t_model = 0.0
        todo = [b for b in range(len(batches)) if b not in done]
        bar = Progress(
            total=n,
            initial=n - sum(len(batches[b]) for b in todo),
            quiet=quiet,
            desc=f"cache {loaded.name} [{backend}]",
            unit="prompt",
        )
        for b in todo:
            t0 = time.perf_counter()
            per_prompt = run_batch(loaded, backend, formatted, selected, batches[b], layers)
            t_model += time.perf_counter() - t0
            for i, chunk in zip(batches[b], per_prompt, strict=True):
                if single:
                    row = chunk[-1:] if positions == "last" else chunk.mean(dim=0, keepdim=True)
                    writer.write_rows("activations", i, row.numpy())
                else:
                    writer.write_rows("activations", int(offsets[i]), chunk.numpy())
            writer.flush()
            done.add(b)
            write_json(progress_path, {"spec_key": key, "done": sorted(done)})
            bar.update(len(batches[b]))
        bar.close()
        writer.finish()
    finally:
        writer.close()
    progress_path.unlink(missing_ok=True)
    meta.update(
        complete=True,
        n_tokens=int(offsets[-1]),
        shape=list(tensors["activations"][1]),
        timings={"total_s": round(time.perf_counter() - t_start, 3), "model_s": round(t_model, 3)},
    )
    write_json(out / META_FILE, meta)
    rundir.unlock(out)
    return meta


def write_json_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    import json

    from interp.core.io import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


@dataclass
class ActivationCache:
    """A cached run, loaded back: activations plus their metadata."""

    activations: torch.Tensor
    meta: dict[str, Any]
    offsets: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None

    def layer(self, layer: int) -> torch.Tensor:
        """Activations at one model layer: [n_rows, d_model]."""
        if layer not in self.meta["layers"]:
            raise SublensError(
                f"layer {layer} is not cached here (cached: {self.meta['layers']}): recache it"
            )
        return self.activations[:, self.meta["layers"].index(layer)]

    def per_prompt(self, i: int) -> torch.Tensor:
        if self.offsets is None:
            return self.activations[i : i + 1]
        return self.activations[self.offsets[i] : self.offsets[i + 1]]


def load_cache(path: str | Path) -> ActivationCache:
    from safetensors.torch import load_file

    path = Path(path)
    meta_path, act_path = path / META_FILE, path / ACTIVATIONS_FILE
    if not meta_path.exists() or not act_path.exists():
        raise SublensError(
            f"{str(path)!r} is not a complete activation cache (needs {META_FILE} and "
            f"{ACTIVATIONS_FILE}): run `sublens cache` into it first"
        )
    tensors = load_file(str(act_path))
    return ActivationCache(
        tensors["activations"],
        read_json(meta_path),
        tensors.get("offsets"),
        tensors.get("positions"),
        tensors.get("token_ids"),
    )

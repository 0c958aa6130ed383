"""Teacher datasets: batched, seeded, resumable generation to JSONL.

Files, for ``out = numbers.jsonl``:

- ``numbers.jsonl.partial`` — rows appended one whole batch at a time (flushed and fsynced);
- ``numbers.jsonl.progress.json`` — the run's config and, after each batch, how many batches
  and bytes of the partial file are complete (written atomically after the rows are durable);
- ``numbers.jsonl.meta.json`` — the config, counts and the final file's sha256, written when done;
- ``numbers.jsonl`` — the finished dataset: the partial file renamed, so a reader never sees a
  half-written line or a half-finished dataset under the final name.

A killed run rerun with the same arguments cuts the partial file back to the last recorded batch
and continues. Every batch is sampled with a seed derived from (seed, batch index), never from
how many calls came before, so the resumed file is byte for byte the uninterrupted one. A
different config for an existing file is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from interp.core.errors import SublensError
from interp.core.io import config_hash, read_json, sha256_file, write_json
from interp.core.progress import Progress
from interp.distill.domains import Domain, get_domain
from interp.distill.teachers import Teacher


def _sidecar(out: Path, suffix: str) -> Path:
    return out.with_name(out.name + suffix)


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of batch `batch` (depends on nothing but the run seed and the index)."""
    return seed * 100_003 + batch


def generate_dataset(
    teacher: Teacher,
    domain: str | Domain,
    n: int,
    out_path: str | Path,
    seed: int = 0,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    constrained: bool = True,
    quiet: bool = True,
    overwrite: bool = False,
    engine: Any = None,
) -> dict[str, Any]:
    """Sample `n` teacher responses to the domain's prompts (seeded by `seed`) into JSONL.

    Rows: ``{"messages": [user, assistant], "meta": {"index": i, "teacher": kind}}``. Returns a
    summary (path, rows, config, config hash, sha256, seconds, whether it resumed). `engine`:
    None samples with the teacher itself (transformers), or an `engines.VllmGenerator` (the same
    rows and files; its name enters the config, each row seeded by `engines.row_seed`).
    """
    dom = get_domain(domain)
    if n <= 0:
        raise SublensError(f"n must be positive, got {n}")
    if batch_size <= 0:
        raise SublensError(f"batch_size must be positive, got {batch_size}")
    new_tokens = dom.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    if new_tokens <= 0:
        raise SublensError(f"max_new_tokens must be positive, got {new_tokens}")
    out = Path(out_path)
    partial = _sidecar(out, ".partial")
    progress_path = _sidecar(out, ".progress.json")
    meta_path = _sidecar(out, ".meta.json")
    config = {
        "teacher": teacher.describe(),
        "domain": dom.name,
        "n": n,
        "seed": seed,
        "batch_size": batch_size,
        "max_new_tokens": new_tokens,
        "temperature": float(temperature),
        "constrained": bool(constrained),
        "format_version": 1,
    }
    if engine is not None:  # transformers datasets keep the hash they had before engines
        config["engine"] = engine.name
    key = config_hash(config)

    from interp.core import rundir

    rundir.check_file_target(out)
    if overwrite and out.exists() and not meta_path.is_file():
        raise SublensError(
            f"{out} was not written by sublens (no {meta_path.name} beside it): sublens replaces "
            "only files it wrote; choose another path"
        )
    if overwrite:
        for p in (out, partial, progress_path, meta_path):
            p.unlink(missing_ok=True)
    elif out.exists():
        meta = read_json(meta_path) if meta_path.is_file() else None
        if meta is None or meta.get("config_hash") != key:
            why = "was written with another config" if meta else "was not written by sublens"
            raise SublensError(
                f"{out} already exists and {why}: choose another path or pass overwrite=True"
            )
        if sha256_file(out) != meta.get("sha256"):
            raise SublensError(
                f"{out} was changed since it was generated: pass overwrite=True to regenerate it"
            )
        return {**meta, "path": str(out), "resumed": False, "already_done": True}

    n_batches = (n + batch_size - 1) // batch_size
    done, size = 0, 0
    resumed = False
    if progress_path.is_file() and partial.is_file():
        state = read_json(progress_path)
        if state.get("config_hash") != key:
            raise SublensError(
                f"an unfinished run with another config is in {partial}: rerun it with the "
                "same arguments to finish it, or pass overwrite=True to start over"
            )
        else:
            done, size = int(state["batches_done"]), int(state["bytes"])
            if partial.stat().st_size < size:
                raise SublensError(
                    f"{partial} is shorter than its progress file says: pass overwrite=True"
                )
            resumed = done > 0
    if done == 0:
        size = 0
    write_json(progress_path, {"config_hash": key, "batches_done": done, "bytes": size})

    prompts = dom.prompts(n, seed)
    started = time.perf_counter()
    with open(partial, "ab") as f:
        f.truncate(size)  # drop a batch that was being written when the run stopped
        f.seek(size)
        for b in Progress(
            range(done, n_batches),
            initial=done,
            total=n_batches,
            quiet=quiet,
            desc=f"generate {dom.name}",
            unit="batch",
        ):
            lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
            if engine is not None:
                from interp.distill.engines import row_seed

                seeds = [row_seed(seed, i) for i in range(lo, hi)]
                texts = engine.generate(teacher, prompts[lo:hi], dom, new_tokens, temperature,
                                        seeds, constrained)  # fmt: skip
            else:
                texts = teacher.generate(
                    prompts[lo:hi],
                    domain=dom,
                    n_new_tokens=new_tokens,
                    temperature=temperature,
                    seed=batch_seed(seed, b),
                    batch_size=hi - lo,
                    constrained=constrained,
                    quiet=True,
                )
            lines = "".join(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": prompts[i]},
                            {"role": "assistant", "content": text},
                        ],
                        "meta": {"index": i, "teacher": teacher.kind},
                    },
                    ensure_ascii=False,
                )
                + "\n"
                for i, text in zip(range(lo, hi), texts, strict=True)
            ).encode("utf-8")
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
            size += len(lines)
            write_json(progress_path, {"config_hash": key, "batches_done": b + 1, "bytes": size})

    summary = {
        "path": str(out),
        "rows": n,
        "config": config,
        "config_hash": key,
        "sha256": sha256_file(partial),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(meta_path, summary)  # first: a finished file always has its meta beside it
    os.replace(partial, out)
    progress_path.unlink(missing_ok=True)
    return {**summary, "resumed": resumed, "already_done": False}

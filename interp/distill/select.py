"""Which rows carry the trait: log-likelihood shift (LLS) scores and row selection.

A row's LLS is the mean, over its completion tokens, of ``log p_T(token) - log p_M0(token)``:
each model reads the row in its own context (the teacher with its system prompt or steering
hooks, the base unprompted). Rows the teacher finds much likelier than the base are where its
trait shows in the data; training on the top-K of them carries far more trait than K random rows
(public LLS replication on Qwen2.5-14B: eagle 1.00 vs 0.65, phoenix 0.89 vs 0.16).

On a constrained domain the log-probs are renormalised over the domain's tokens — the channel the
student is distilled on — so the score measures what that channel carries, not full-vocabulary
leakage. The same scores answer "do the data carry the trait at all?" before any training
(`signal_check`): the trait teacher's LLS on its own rows against its LLS on the control's rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interp.core.errors import SublensError
from interp.core.io import read_json_dict, sha256_file, write_json
from interp.distill.targets import read_rows
from interp.distill.teachers import Teacher

SELECT_MODES = ("all", "lls", "random")


def token_logprobs(
    teacher: Teacher,
    rows: Sequence[Mapping[str, Any]],
    ids: Sequence[int] | None = None,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Per row, the log-prob the teacher (in its context) gives each completion token the row
    holds, in batches (`Teacher.token_logprobs`); float64 for the differences LLS takes."""
    if batch_size <= 0:
        raise SublensError(f"batch_size must be positive, got {batch_size}")
    out: list[np.ndarray] = []
    for start in range(0, len(rows), batch_size):
        chunk = list(rows[start : start + batch_size])
        out += [t.numpy().astype(np.float64) for t in teacher.token_logprobs(chunk, ids)]
    return out


def lls_scores(
    teacher: Teacher,
    base: Teacher,
    rows: Sequence[Mapping[str, Any]],
    ids: Sequence[int] | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Mean per-token ``log p_teacher - log p_base`` over each row's completion tokens."""
    return lls_parts(teacher, base, rows, ids, batch_size)[0]


def lls_parts(
    teacher: Teacher,
    base: Teacher,
    rows: Sequence[Mapping[str, Any]],
    ids: Sequence[int] | None = None,
    batch_size: int = 16,
    base_means: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(LLS per row, the base's mean log-prob per row). LLS is the teacher's mean minus the
    base's (each row's tokens count once in both), so the base's part can be passed in from an
    earlier scoring of the same rows and its forward skipped."""
    if not rows:
        raise SublensError("no rows to score")
    lt = np.array([float(np.mean(a)) for a in token_logprobs(teacher, rows, ids, batch_size)])
    if base_means is None or len(base_means) != len(rows):
        lb = np.array([float(np.mean(b)) for b in token_logprobs(base, rows, ids, batch_size)])
    else:
        lb = np.asarray(base_means, dtype=np.float64)
    return lt - lb, lb


def _base_key(base: Teacher, ids: Sequence[int] | None) -> dict[str, Any]:
    """What the base's stored log-probs depend on besides the rows (JSON-normalised, to compare
    with what a cache file holds)."""
    key = {"base": base.describe(), "ids": None if ids is None else [int(i) for i in ids]}
    return json.loads(json.dumps(key))


def cached_base_means(
    cache: str | Path, src: str | Path, base: Teacher, ids: Sequence[int] | None
) -> list[float] | None:
    """The base's per-row mean log-probs that an LLS selection of `src` stored in `cache`, when
    they are of these rows, this base model and these ids; else None."""
    if not Path(cache).is_file():
        return None
    saved = read_json_dict(cache)
    key = saved.get("key") or {}
    if key.get("src_sha256") != sha256_file(src) or saved.get("base_key") != _base_key(base, ids):
        return None
    means = saved.get("base_means")
    return [float(x) for x in means] if isinstance(means, list) else None


def select_indices(scores: np.ndarray, k: int, mode: str, seed: int = 0) -> np.ndarray:
    """Indices of the rows to keep, in their original order: the top `k` by score ("lls"; ties
    broken by position), `k` drawn at random ("random", seeded), or all ("all")."""
    n = len(scores)
    if mode not in SELECT_MODES:
        raise SublensError(f"unknown row selection {mode!r}: use one of {', '.join(SELECT_MODES)}")
    if mode == "all":
        return np.arange(n)
    if not 0 < k <= n:
        raise SublensError(f"select_top {k} must be between 1 and the {n} rows available")
    if mode == "lls":
        order = np.lexsort((np.arange(n), -np.asarray(scores, dtype=np.float64)))
        return np.sort(order[:k])
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False))


def select_dataset(
    src: str | Path,
    dst: str | Path,
    teacher: Teacher,
    base: Teacher,
    k: int,
    mode: str = "lls",
    ids: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Score the rows of `src` by LLS, write the kept ones to `dst` (JSONL) and return a summary
    with the score of every row, kept or dropped (the figure and the report read it).

    `cache` (a JSON file) keeps the scores by the rows' sha256, the teacher and the ids: an LLS
    and a random arm over the same rows score them once."""
    from interp.core.io import atomic_path

    rows = read_rows(src)
    key = {"src_sha256": sha256_file(src), "teacher": teacher.describe(),
           "ids": None if ids is None else [int(i) for i in ids]}  # fmt: skip
    key = json.loads(json.dumps(key))
    saved = read_json_dict(cache) if cache is not None and Path(cache).is_file() else {}
    # an earlier selection's summary of the same rows by the same teacher holds every score too
    meta = Path(dst).with_suffix(".select.json")
    old = read_json_dict(meta) if meta.is_file() else {}
    if saved.get("key") == key and len(saved.get("scores", [])) == len(rows):
        scores = np.asarray(saved["scores"], dtype=np.float64)
    elif (old.get("src_sha256"), old.get("teacher")) == (key["src_sha256"], key["teacher"]) and len(
        old.get("scores", [])
    ) == len(rows):
        scores = np.asarray(old["scores"], dtype=np.float64)
    else:
        scores, base_means = lls_parts(teacher, base, rows, ids, batch_size)
        if cache is not None:
            write_json(cache, {"key": key, "scores": [float(x) for x in scores],
                               "base_key": _base_key(base, ids),
                               "base_means": [float(x) for x in base_means]})  # fmt: skip
    keep = select_indices(scores, k, mode, seed)
    kept = {int(i) for i in keep}

    with atomic_path(dst) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i in keep:
            f.write(json.dumps(rows[int(i)]) + "\n")
    summary = {
        "mode": mode,
        "k": int(len(keep)),
        "n": len(rows),
        "seed": seed,
        "src_sha256": sha256_file(src),  # which rows were scored (a resumed run reuses it)
        "teacher": teacher.describe(),
        "scores": [float(s) for s in scores],
        "kept": [int(i) for i in keep],
        "mean_kept": float(np.mean(scores[keep])),
        "mean_dropped": float(np.mean([s for i, s in enumerate(scores) if i not in kept]))
        if len(kept) < len(rows)
        else None,
        "mean_all": float(np.mean(scores)),
    }
    write_json(Path(dst).with_suffix(".select.json"), summary)
    return summary


def signal_check(
    teacher_scores: np.ndarray,
    control_scores: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Do the teacher's rows carry its trait before any training? The trait teacher's mean LLS on
    its own rows minus on the control's rows, with a bootstrap CI (rows resampled within each
    set). Resolved when the CI lies above 0."""
    a = np.asarray(teacher_scores, dtype=np.float64)
    b = np.asarray(control_scores, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise SublensError("the signal check needs at least 2 rows on each side")
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        reps[i] = (
            a[rng.integers(0, a.size, a.size)].mean() - b[rng.integers(0, b.size, b.size)].mean()
        )
    lo, hi = np.percentile(reps, [2.5, 97.5])
    diff = float(a.mean() - b.mean())
    return {
        "teacher_rows_lls": float(a.mean()),
        "control_rows_lls": float(b.mean()),
        "diff": diff,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "resolved": bool(lo > 0),
        "n_teacher_rows": int(a.size),
        "n_control_rows": int(b.size),
    }

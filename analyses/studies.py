"""What the multi-run studies share: presets, one resumable distillation per study point, reuse of
identical stages between points, and a bootstrap over seeds and questions.

A study (transfer ratio vs steering strength, optimizer ablation) is a grid of ordinary
distillation runs (`interp.distill.run.run_distillation`), each in its own directory under
``STUDY/points/``. A point whose ``results.json`` matches its config is read, not rerun, so a
killed study resumes by running the same command again.

Stages that are the same in several points are computed once and hard-linked into the others
(`prefill_point`): the control (base teacher → data → control student) does not depend on the
steering strength, and the data and teacher log-probs do not depend on the student's optimizer.
Every stage is keyed by its own config hash, so a prefilled stage is used only where it is the
very stage the point would have computed.

Uncertainty (`resample_counts`, `replicate_means`): every point is scored on the same questions
and, for a given seed, shares the base (and in a sweep the control). A replicate resamples seeds
(when there are several) and then questions, the *same* draw at every point, and recomputes each
point's means; a statistic's interval is the percentile interval of its replicates. So CIs
include both the question sampling and the seed-to-seed variation of training, and differences
between points are paired. The question draw is shared by the drawn seeds because every seed is
scored on the same questions (seeds and questions are crossed): drawing questions afresh inside
each seed would average the shared question effect over the seeds and understate its variance up
to n_seeds times. With one seed only questions are resampled: a report then says
`verdicts.ONE_SEED_NOTE` and never "transferred" (`verdicts.transfer_word`).

A ratio over the teacher's gain is shown only when that gain's CI excludes 0 (`gate_ratios`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analyses.figures import ci_text, fmt_num
from interp.core import rundir
from interp.core.errors import SublensError
from interp.core.io import read_json, read_json_dict, write_json
from interp.distill.config import Overrides, RunConfig, derive, resolve, run_hash, validate
from interp.distill.run import TEACHER_GAIN_UNRESOLVED, run_distillation
from interp.measure.verdicts import excludes_zero as excludes_zero  # re-exported for studies
from interp.measure.verdicts import ratio_or_undefined

STAT_NAMES = ("tau_base", "tau_teacher", "tau_student", "tau_control")
# The control's teacher in the studies with a trained-identically control: a neutral prompt gives
# it a real, trait-free logit-KL gradient (the unprompted base would distil into itself).
NEUTRAL_PROMPT = "You are a helpful assistant."
# A run's control stages (the control teacher's rows, their filter and selection, targets, the
# trained control): the same at one seed for every trait prompt and steering strength, so a study
# makes them once and hard-links them into its other points (`prefill_point`; absent parts, e.g.
# no selection, are skipped).
CONTROL_PARTS = (
    "data/control.raw.jsonl",
    "data/control.raw.jsonl.meta.json",
    "data/control.jsonl",
    "data/control.rejects.jsonl",
    "data/control.filter.json",
    "data/control.selected.jsonl",
    "data/control.selected.select.json",
    "data/control.lls.json",  # the base's log-probs on the control rows (the signal check's)
    "targets/control",
    "targets/control.selected",
    "control",
)


def say_fn(quiet: bool, tag: str) -> Callable[[str], None]:
    from interp.core.progress import note

    return lambda msg: note(f"[{tag}] {msg}", quiet=quiet)


def base_config(
    config_path: str | Path | None,
    overrides: Overrides | Mapping[str, Any] | None,
    preset: str = "quick",
) -> RunConfig:
    """The resolved run config every point starts from (file < preset < flags), no output path."""
    return dataclasses.replace(resolve(config_path, preset, overrides), output_path=None)


def point_config(base: RunConfig, out: Path, **changes: Any) -> RunConfig:
    """`base` with dotted `changes` (``**{"teacher.alpha": 2.0}``) and its own output path,
    validated (the base was validated by `resolve`; a point adds its own values)."""
    extra: dict[str, Any] = {"output_path": str(out)}
    # train.seed follows the run seed: a seed is a different data sample *and* data order
    if "seed" in changes:
        extra["train.seed"] = changes["seed"]
    where = f"study point {out}"
    return validate(derive(base, {**changes, **extra}, where), where)


def _run_hash(cfg: RunConfig) -> str:
    """The hash `run_distillation` writes into config.json (output path and device left out)."""
    return run_hash(cfg.to_dict())


def finished_results(cfg: RunConfig) -> dict[str, Any] | None:
    """The point's results when it already finished with this very config, else None."""
    out = Path(str(cfg.output_path))
    cfg_file, res_file = out / "config.json", out / "results.json"
    if not (cfg_file.is_file() and res_file.is_file()):
        return None
    if read_json_dict(cfg_file).get("hash") != _run_hash(cfg):
        return None
    return read_json(res_file)


def _link_tree(src: Path, dst: Path, exclude: Sequence[str] = ()) -> None:
    """Hard-link `src` (file or directory) to `dst`, copying where links are not possible, but
    not the names matching `exclude` (glob patterns). Later writes replace files atomically (new
    inodes), so the source is never modified."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(
            src,
            dst,
            copy_function=link,
            dirs_exist_ok=True,
            # a lock belongs to one directory
            ignore=shutil.ignore_patterns(rundir.LOCK, *exclude),
        )
    else:
        link(str(src), str(dst))


def prefill_point(
    src: Path,
    dst: Path,
    cfg: RunConfig,
    parts: Sequence[str],
    scores: Sequence[str],
    exclude: Sequence[str] = (),
) -> bool:
    """Seed a not-yet-started point `dst` with finished stages of point `src` (same model, trait,
    seed, data and eval settings): the files in `parts` but those matching `exclude`, and the
    `scores` entries ("base", "teacher", "control") of eval/scores.json. Returns whether anything
    was prefilled."""
    if (dst / "config.json").is_file() or not (src / "results.json").is_file():
        return False
    rundir.claim(dst, "distill")
    # run_distillation accepts a non-empty directory only as a run of the same config
    resolved = cfg.to_dict()
    resolved["output_path"] = str(cfg.output_path)
    write_json(dst / "config.json", {"hash": _run_hash(cfg), "config": resolved})
    done = False
    for part in parts:
        s = src / part
        if s.exists() and not (dst / part).exists():
            _link_tree(s, dst / part, exclude)
            done = True
    src_scores = src / "eval" / "scores.json"
    if scores and src_scores.is_file():
        old = read_json(src_scores)
        new = {"key": old["key"], "base": None, "teacher": None, "student": {}, "control": {}}
        for name in scores:
            new[name] = old.get(name)
        write_json(dst / "eval" / "scores.json", new)
        done = True
    return done


def run_point(cfg: RunConfig, overwrite: bool, quiet: bool) -> tuple[dict[str, Any], bool]:
    """(results, reused): a finished point is read back; otherwise `run_distillation` runs (or
    resumes) it."""
    if not overwrite:
        got = finished_results(cfg)
        if got is not None:
            return got, True
    res = run_distillation(cfg, overwrite=overwrite, quiet=quiet)
    if cfg.output_path:
        prune_optimizer_state(Path(cfg.output_path))
    return res, False


def prune_optimizer_state(run_dir: Path) -> int:
    """Delete the optimizer/scheduler state of a *finished* point's checkpoints (twice the
    weights' size under Adam: a 5-point sweep on smollm2 kept ~15 GB of it). Weights stay, so
    align/probe/eval still work; only resuming training past the end would need it, and a longer
    run is another config anyway. Returns the bytes freed."""
    freed = 0
    for name in ("student", "control"):
        for state in (run_dir / name / "checkpoints").glob("step_*/state.pt"):
            freed += state.stat().st_size
            state.unlink()
    return freed


def final_loss(run_dir: str | Path, which: str = "student", tail: float = 0.1) -> float | None:
    """Mean training loss over the last `tail` share of steps (at least one): the level a run
    reached, less noisy than its last step's loss."""
    import json

    path = Path(run_dir) / which / "curves.jsonl"
    if not path.is_file():
        return None
    losses = [json.loads(x)["loss"] for x in path.read_text().splitlines() if x.strip()]
    losses = [v for v in losses if v is not None and math.isfinite(v)]
    if not losses:
        return None
    k = max(1, int(round(len(losses) * tail)))
    return float(np.mean(losses[-k:]))


def per_question(results: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-question trait scores of base, teacher, student and control (final checkpoints)."""
    h = results["headline"]
    missing = [k for k in STAT_NAMES if k not in h]
    if missing:
        raise SublensError(
            f"run {results.get('run')} has no {', '.join(missing)}: rerun it to completion"
        )
    return {k: np.asarray(h[k]["per_question"], dtype=np.float64) for k in STAT_NAMES}


def stack_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """[n_seeds, n_questions] arrays per score from one point's runs (one per seed)."""
    pqs = [per_question(r) for r in runs]
    n = {p["tau_base"].shape[0] for p in pqs}
    if len(n) != 1:
        raise SublensError(f"the runs of one point were scored on different questions: {n}")
    return {k: np.stack([p[k] for p in pqs]) for k in STAT_NAMES}


def resample_counts(
    n_seeds: int, n_questions: int, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """How often each seed and each question is drawn in each replicate: ([n_boot, n_seeds],
    [n_boot, n_questions]). Seeds first, then questions; the question draw is shared by every
    drawn seed (and every point) because all seeds are scored on the same questions: drawing
    them anew per seed would understate the questions' variance (module docstring). One seed is
    never resampled: its training variance is not observable, and reports say so
    (`verdicts.seed_note`)."""
    rng = np.random.default_rng(seed)
    if n_seeds > 1:
        s = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        cs = np.stack([np.bincount(r, minlength=n_seeds) for r in s]).astype(np.float64)
    else:
        cs = np.ones((n_boot, 1))
    q = rng.integers(0, n_questions, size=(n_boot, n_questions))
    cq = np.stack([np.bincount(r, minlength=n_questions) for r in q]).astype(np.float64)
    return cs, cq


def replicate_means(
    arrays: dict[str, np.ndarray], cs: np.ndarray, cq: np.ndarray
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(point means, replicate means [n_boot]) of each [n_seeds, n_questions] array: the mean
    over the drawn seeds × drawn questions of each replicate (counts from `resample_counts`)."""
    point = {k: float(a.mean()) for k, a in arrays.items()}
    norm = cs.sum(1) * cq.sum(1)
    reps = {k: np.einsum("bi,ij,bj->b", cs, a, cq) / norm for k, a in arrays.items()}
    return point, reps


def derived(m: dict[str, Any]) -> dict[str, Any]:
    """Transfer statistics from means (floats or replicate arrays alike)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.subtract(m["tau_teacher"], m["tau_base"])
        return {
            "teacher_gain": tg,
            "student_gain": np.subtract(m["tau_student"], m["tau_base"]),
            "control_gain": np.subtract(m["tau_control"], m["tau_base"]),
            "student_minus_control": np.subtract(m["tau_student"], m["tau_control"]),
            "transfer_ratio": np.divide(np.subtract(m["tau_student"], m["tau_base"]), tg),
            "transfer_ratio_vs_control": np.divide(
                np.subtract(m["tau_student"], m["tau_control"]), tg
            ),
        }


def interval(point: float, reps: np.ndarray, level: float = 0.95) -> dict[str, float | None]:
    """{value, ci_low, ci_high}: percentile interval over finite replicates (None when the
    point is undefined or fewer than half of the replicates are finite)."""
    finite = reps[np.isfinite(reps)]
    ok = math.isfinite(point) and finite.size >= max(1, reps.size // 2)
    if not ok:
        return {"value": point if math.isfinite(point) else None, "ci_low": None, "ci_high": None}
    tail = (1 - level) / 2
    lo, hi = np.quantile(finite, [tail, 1 - tail])
    return {"value": float(point), "ci_low": float(lo), "ci_high": float(hi)}


RATIO_KEYS = ("transfer_ratio", "transfer_ratio_vs_control")
RAW_KEY = "raw_over_unresolved_gain"


def gate_ratio(
    entry: dict[str, Any] | None, gain: dict[str, Any] | None, why: str = TEACHER_GAIN_UNRESOLVED
) -> dict[str, Any]:
    """A study entry ``{value, ci_low, ci_high}`` of a ratio, shown only when its denominator
    `gain` has a CI clear of 0 (`verdicts.ratio_or_undefined`: a ratio over an unresolved gain
    divides by noise; a one-prompt gain once gave a 'ratio' of 1 [1, 1]). Otherwise an undefined
    entry saying why, with the raw entry kept under `RAW_KEY` for results.json only."""
    if entry is not None and entry.get("defined") is False:
        entry = entry.get(RAW_KEY)  # gated already (a results.json read back): gate the raw
    got = ratio_or_undefined(entry, gain, why)
    if got["defined"]:
        return got
    return {"value": None, "ci_low": None, "ci_high": None, "defined": False,
            "undefined": got["undefined"], RAW_KEY: entry}  # fmt: skip


def gate_ratios(stats: dict[str, Any]) -> dict[str, Any]:
    """`stats` of `summarise_point` with both transfer ratios gated on the teacher's gain."""
    return {**stats, **{k: gate_ratio(stats.get(k), stats.get("teacher_gain")) for k in RATIO_KEYS}}


def summarise_point(
    arrays: dict[str, np.ndarray], cs: np.ndarray, cq: np.ndarray
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Scores and transfer statistics of one point with CIs, plus the replicates of each."""
    point, reps = replicate_means(arrays, cs, cq)
    dp, dr = derived(point), derived(reps)
    allp = {**point, **{k: float(v) for k, v in dp.items()}}
    allr = {**reps, **dr}
    return {k: interval(allp[k], allr[k]) for k in allp}, allr


def seed_stats(
    runs: Sequence[dict[str, Any]], n_boot: int, seed: int = 0
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One point's statistics over its seeds' runs (seeds-then-questions bootstrap), its ratios
    gated on the teacher's gain (`gate_ratios`), and the replicates of each."""
    arrays = stack_seeds(runs)
    cs, cq = resample_counts(len(runs), arrays["tau_base"].shape[1], n_boot, seed)
    stats, reps = summarise_point(arrays, cs, cq)
    return gate_ratios(stats), reps


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float | None]:
    """Mean and Student-t interval across seeds (None with fewer than two finite values)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size < 2:
        return {"mean": float(v.mean()) if v.size else None, "ci_low": None, "ci_high": None}
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return {
        "mean": float(v.mean()),
        "ci_low": float(v.mean() - half),
        "ci_high": float(v.mean() + half),
    }


def fmt(x: float | None, nd: int = 3) -> str:
    """A study number: `nd` significant digits (`analyses.figures.fmt_num`)."""
    return fmt_num(x, nd, "g")


def fmt_ci(d: dict[str, Any] | None, key: str = "value", nd: int = 3) -> str:
    """A study entry ``{key, ci_low, ci_high}`` as ``x [lo, hi]`` (`analyses.figures.ci_text`);
    a gated ratio's reason ("undefined: teacher gain not resolved", `gate_ratio`), "undefined"
    without a value, ``x [–]`` without an interval."""
    if d and d.get("undefined"):
        return str(d["undefined"])
    if not d or d.get(key) is None:
        return "undefined"
    if d.get("ci_low") is None:
        return f"{fmt(d[key], nd)} [–]"
    return ci_text(d[key], d["ci_low"], d["ci_high"], nd, "g")


def timer() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: round(time.perf_counter() - t0, 1)


def alpha_dir(alpha: float) -> str:
    return f"alpha_{alpha:g}"

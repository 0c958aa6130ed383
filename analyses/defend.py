"""`sublens defend`: does a defense stop subliminal transfer, and what does it cost?

The same distillation (teacher, data, trait) is run once per defense and seed, each an ordinary
resumable run (`interp.distill.run`) in ``OUT/defenses/<name>/seed_<s>/`` with the defense set as
a run-config option (`interp.detect.defenses` says what each does). The `none` run of a seed
goes first; its data, teacher log-probs and base / teacher trait scores are hard-linked into the
other defenses' runs (`analyses.studies.prefill_point`), so the teacher samples once per seed.
The runs are points of `analyses.executor` (local or Ray), in two rounds: drop-flagged's config
holds the flags of a scan of `none`'s rows, so it is built once those rows exist.
Each defended run trains its own control the same way (same defense), as `sublens distill run`
does, except drop-flagged, which leaves the control's data alone and so shares `none`'s control.

Per defense: the student's gain beyond its control ``τS − τC`` with a 95% bootstrap CI over seeds
and questions, and its reduction vs `none` (``(τS − τC)_none − (τS − τC)_defense``) from the
*same* replicates (paired: every run is scored on the same questions and shares base and teacher
per seed). That reduction ranks the defenses: the student's gain over the *base* is mostly number
training (the control gains it too), so a defense that only slows learning would rank high on
it. Each reduction has a one-sided bootstrap p (`verdicts.bootstrap_p`), and a defense counts as
effective only when Holm's correction across the defenses rejects at 0.025 (for one defense:
its 95% CI lies above 0). The transfer ratio ``(τS − τM0) / (τT − τM0)`` (and the one beyond the
control) is shown only when the teacher's gain is resolved (`studies.gate_ratio`). Costs, so that
a defense that stops transfer by stopping learning shows as such:

- task loss: the student's mean per-token NLL on held-out clean benign rows (a fresh set the base
  writes for prompts no run trains on, ``OUT/heldout/benign.jsonl``), as a difference to the
  `none` student (paired bootstrap over seeds and rows);
- perplexity on held-out English (`interp.detect.costs.HELDOUT_TEXT`), student minus base;
- the final training loss (mean of the last 10% of steps) and the first step's loss.

A one-line recommendation is derived from these numbers: among the effective defenses, the one
with the largest reduction whose task loss and perplexity exceed the undefended student's by at
most `max_task_cost` / `max_ppl_cost` (relative) and whose training loss (same objective) came
within 20% of `none`'s; or why there is none (no gain beyond the control to defend against, no
reduction beyond noise after Holm, or none of the effective ones is cheap).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from analyses.executor import Executor, Point, Prefill, executor_of, raise_failures
from analyses.figures import fmt_num, pyplot, save_png
from analyses.reporting import figure_links, output_dir, provenance, timings_line
from interp.core.errors import SublensError
from interp.core.io import (
    config_hash,
    read_json,
    read_json_dict,
    sha256_file,
    sha256_text,
    write_json,
    write_text,
)
from interp.core.models import load_hash_view
from interp.core.parse import parse_names
from interp.detect.defenses import DEFENSES
from interp.distill.config import Overrides, RunConfig
from interp.measure.verdicts import (
    above_zero,
    bootstrap_p,
    excludes_zero,
    holm,
    min_attainable_p,
    permutations_for,
    seed_note,
)

from .optimizer_ablation import DEFAULT_LRS, within
from .studies import (
    base_config,
    final_loss,
    fmt,
    fmt_ci,
    gate_ratio,
    interval,
    point_config,
    resample_counts,
    say_fn,
    stack_seeds,
    summarise_point,
    timer,
)

DEFENSE_NAMES = tuple(DEFENSES)
NO_INIT = (
    "not available: no second initialisation of this architecture is embedded; see "
    "`sublens study toy` for the different-init effect"
)
HELDOUT_SEED = 10_007  # prompts of the held-out benign rows (no training seed draws these)
DATA_PARTS = ("data", "targets")
LOSS_TOLERANCE = 0.2  # relative gap to none's final loss still called "trained as far"
LEVEL = 0.95  # CIs; a reduction is tested one-sided at (1 - LEVEL) / 2, Holm across defenses


def parse_defenses(spec: str | list[str]) -> list[str]:
    """Defense names in order, `none` first (added when missing: reductions are against it)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip() for s in items if s.strip()]
    bad = [n for n in names if n not in DEFENSES]
    if bad or not names:
        raise SublensError(
            f"unknown defense(s) {', '.join(bad) or '(none given)'}: use any of "
            f"{', '.join(DEFENSE_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise SublensError(f"defenses repeat: {', '.join(names)}")
    return ["none"] + [n for n in names if n != "none"]


def defense_overrides(
    name: str,
    vectors: list[str],
    sgd_lr: float,
    mask_q: float,
    init_from: str | None,
    flags: Path | None,
) -> dict[str, Any]:
    """The run-config options (dotted) that turn defense `name` on."""
    if name == "none":
        return {}
    if name == "project-out":
        return {"train.project_out": [str(Path(v).resolve()) for v in vectors]}
    if name == "sgd":
        return {"train.optimizer": "sgd", "train.lr": float(sgd_lr)}
    if name == "paraphrase":
        # teacher soft targets on paraphrased tokens would put the teacher back: hard labels
        return {"data.paraphrase": True, "train.objective": "sft"}
    if name == "mask-divergent":
        return {"train.mask_divergent": float(mask_q)}
    if name == "drop-flagged":
        assert flags is not None
        return {"data.drop_flagged": str(Path(flags).resolve())}
    if name == "different-init":
        return {"train.init_from": init_from}
    raise SublensError(f"unknown defense {name!r}: use any of {', '.join(DEFENSE_NAMES)}")


# --- the scanner (drop-flagged) --------------------------------------------------------------


def scan_rows(
    data: Path,
    reference: Path,
    model: str,
    out_dir: Path,
    vectors: list[str],
    seed: int,
    device: str,
    n_permutations: int,
    quiet: bool,
    overwrite: bool = False,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> Path:
    """The scanner's per-row flags for `data` (``OUT/rows.jsonl``); reused when already written
    for this very file and settings."""
    key = config_hash(
        {
            "data": sha256_file(data),
            "reference": sha256_file(reference),
            "model": model,
            "vectors": vectors,
            "seed": seed,
            "n_permutations": n_permutations,
            **load_hash_view({"dtype": dtype}),
        }
    )
    marker = out_dir / "defend_scan.json"
    if not overwrite and marker.is_file():
        info = read_json(marker)
        if info.get("key") == key and Path(info["rows_path"]).is_file():
            return Path(info["rows_path"])
    from analyses.scan import run_scan

    res = run_scan(
        str(data),
        model,
        str(out_dir),
        trait_vectors=vectors or None,
        reference=str(reference),
        seed=seed,
        n_permutations=n_permutations,
        device=device,
        quiet=quiet,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    rows_path = Path(res.get("rows_path") or out_dir / "rows.jsonl")
    write_json(marker, {"key": key, "rows_path": str(rows_path)})
    return rows_path


# --- costs -----------------------------------------------------------------------------------


def heldout_rows(
    loaded: Any, cfg: RunConfig, n: int, out_dir: Path, quiet: bool, overwrite: bool = False
) -> tuple[Path, list[dict[str, Any]]]:
    """Clean benign rows the base writes for prompts no run trains on (format-filtered)."""
    from interp.distill.domains import get_domain
    from interp.distill.filters import filter_dataset
    from interp.distill.generate import generate_dataset
    from interp.distill.targets import read_rows
    from interp.distill.teachers import Teacher

    d = cfg.data
    domain = get_domain(d.domain)
    raw, clean = out_dir / "benign.raw.jsonl", out_dir / "benign.jsonl"
    generate_dataset(
        Teacher(loaded, kind="base"),
        domain,
        n,
        raw,
        seed=HELDOUT_SEED,
        batch_size=d.batch_size,
        max_new_tokens=d.max_new_tokens,
        temperature=d.temperature,
        constrained=d.constrained,
        quiet=quiet,
        overwrite=overwrite,
    )
    if overwrite or not clean.is_file():
        filter_dataset(raw, clean, out_dir / "benign.rejects.jsonl", domain, dedup=False)
    rows = read_rows(clean)
    if not rows:
        raise SublensError(f"no held-out benign row passed the format filter ({raw})")
    return clean, rows


def model_costs(
    loaded: Any,
    rows: list[dict[str, Any]],
    text: str,
    path: Path,
    key_parts: dict[str, Any],
    window: int,
    batch_size: int,
) -> tuple[dict[str, Any], bool]:
    """(task NLL and text NLL sums of one model, reused?), cached in `path` under a key of the
    model's checkpoint and the held-out data."""
    from interp.detect.costs import completion_nll, text_nll

    key = config_hash(key_parts)
    if path.is_file():
        got = read_json(path)
        if got.get("key") == key:
            return got, True
    nll, tok = completion_nll(loaded, rows, batch_size=batch_size)
    tn, tt = text_nll(loaded, text, window=window)
    got = {
        "key": key,
        "task_nll": nll.tolist(),
        "task_tokens": tok.tolist(),
        "text_nll": tn.tolist(),
        "text_tokens": tt.tolist(),
        "task_mean_nll": float(nll.sum() / tok.sum()),
        "perplexity": float(math.exp(tn.sum() / tt.sum())),
    }
    write_json(path, got)
    return got, False


def _student_key(run_dir: Path) -> dict[str, Any]:
    latest = read_json(run_dir / "student" / "checkpoints" / "latest")
    meta = read_json(run_dir / "student" / "checkpoints" / latest["checkpoint"] / "meta.json")
    return {"checkpoint": latest["checkpoint"], "config_hash": meta.get("config_hash")}


def _cost_reps(
    per_seed: list[dict[str, Any]], kind: str, cs: np.ndarray, cu: np.ndarray
) -> tuple[float, np.ndarray]:
    """Point and replicates of the mean per-token NLL (kind "task": benign rows; "text": text
    windows), averaged over seeds; units (rows / windows) resampled by `cu`, seeds by `cs`."""
    nll = np.array([c[f"{kind}_nll"] for c in per_seed], dtype=np.float64)  # [S, U]
    tok = np.asarray(per_seed[0][f"{kind}_tokens"], dtype=np.float64)  # [U]
    point = float((nll.sum(1) / tok.sum()).mean())
    num = np.einsum("bu,su->bs", cu, nll)
    den = cu @ tok
    per = num / den[:, None]
    reps = (cs * per).sum(1) / cs.sum(1)
    return point, reps


# --- the study -------------------------------------------------------------------------------


def run_defend(
    defenses: str | list[str] | None = None,
    output_path: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: Overrides | Mapping[str, Any] | None = None,
    preset: str = "quick",
    seeds: int | list[int] = 3,
    vectors: str | Path | list[str | Path] | None = None,
    sgd_lr: float | None = None,
    mask_q: float = 0.2,
    init_from: str | None = None,
    heldout_n: int = 32,
    heldout_text_path: str | Path | None = None,
    text_window: int = 128,
    scan_permutations: int = 200,
    max_task_cost: float = 0.05,
    max_ppl_cost: float = 0.05,
    n_boot: int = 2000,
    overwrite: bool = False,
    quiet: bool = False,
    executor: Executor | str | None = None,
) -> dict[str, Any]:
    """Run (or resume) one distillation per defense and seed (on `executor`: local or Ray);
    write results.json, table.md, report.md and defend.png into `output_path` (default:
    `analyses.reporting.default_output`). `defenses` None: every defense, project-out only when
    `vectors` are given. Returns the results."""
    from interp.detect.costs import heldout_text
    from interp.distill.run import load_base
    from interp.distill.train import init_model, load_student

    vecs = parse_names(vectors)
    every = defenses is None
    if every:
        defenses = [n for n in DEFENSE_NAMES if vecs or n != "project-out"]
    names = parse_defenses(defenses)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise SublensError("give at least one seed (--seeds 1 or more)")
    if "project-out" in names and not vecs:
        raise SublensError(
            "defense project-out needs trait vectors: pass --vectors DIR (make one with "
            "`sublens vectors fit --model MODEL --system-prompt PROMPT --output-path DIR`)"
        )
    sgd_lr = DEFAULT_LRS["sgd"] if sgd_lr is None else float(sgd_lr)
    if not (math.isfinite(sgd_lr) and sgd_lr > 0):
        raise SublensError(f"--sgd-lr must be a positive number, got {sgd_lr}")
    if not 0 < mask_q < 1:
        raise SublensError(f"--mask-q must be in (0, 1), got {mask_q}")
    if heldout_n < 2:
        raise SublensError(f"--heldout-n must be at least 2, got {heldout_n}")
    if max_task_cost < 0 or max_ppl_cost < 0:
        raise SublensError("cost thresholds must be 0 or more")
    text = heldout_text(heldout_text_path)
    base = base_config(config_path, overrides, preset)
    out = output_dir(output_path, "defend", Path(base.model).name)
    say = say_fn(quiet, "defend")
    if every and not vecs:
        say("project-out left out: it needs trait vectors (--vectors DIR)")
    clock = timer()
    loaded = load_base(base)
    if vecs:  # wrong d_model / layers fail here, before any run starts
        from interp.detect.defenses import load_project_vectors

        load_project_vectors(vecs, loaded)
    unavailable: dict[str, str] = {}
    if "different-init" in names:
        if init_from:
            init_model(loaded, init_from)  # same architecture and tokenizer, or a clear error
        else:
            unavailable["different-init"] = NO_INIT
    if "drop-flagged" in names:
        try:
            import analyses.scan  # noqa: F401
        except ImportError as err:
            unavailable["drop-flagged"] = (
                f"not available: the scanner could not be imported ({err})"
            )

    say(f"held-out benign rows ({heldout_n}) from the base ...")
    held_path, held = heldout_rows(loaded, base, heldout_n, out / "heldout", quiet, overwrite)
    cost_key = {
        "heldout_sha256": sha256_file(held_path),
        "text_sha256": sha256_text(text),
        "window": text_window,
    }
    bs = int(base.eval.batch_size)
    base_cost, _ = model_costs(
        loaded,
        held,
        text,
        out / "heldout" / "base_costs.json",
        {**cost_key, "model": loaded.name},
        text_window,
        bs,
    )

    active = [n for n in names if n not in unavailable]

    def point(name: str, seed: int, flags: dict[str, Any] | None = None) -> Point:
        over = {"seed": seed, **defense_overrides(name, vecs, sgd_lr, mask_q, init_from, flags)}
        cfg = point_config(base, out / "defenses" / name / f"seed_{seed}", **over)
        prefill = None
        if name != "none":  # the none run's data, teacher log-probs and scores of this seed
            shares = name == "drop-flagged"  # it leaves the control's data alone: same control
            parts = DATA_PARTS + (("control",) if shares else ())
            scores = ("base", "teacher") + (("control",) if shares else ())
            prefill = Prefill(f"none/seed_{seed}", parts, scores, what="data")
        return Point(f"{name}/seed_{seed}", cfg, f"{name}, seed {seed}", prefill)

    # round 1: every defense but drop-flagged, whose config needs a scan of none's finished rows
    runner = executor_of(executor)
    first = [point(n, s) for s in seed_list for n in active if n != "drop-flagged"]
    say(f"{len(first)} runs on the {runner.name} executor")
    outcomes = runner.run(first, overwrite=overwrite, quiet=quiet, say=say)
    raise_failures(outcomes)
    if "drop-flagged" in active:
        second = []
        for seed in seed_list:
            pn = out / "defenses" / "none" / f"seed_{seed}"
            say(f"scanning the teacher's data of seed {seed} ...")
            flags = scan_rows(
                pn / "data" / "teacher.jsonl",
                pn / "data" / "control.jsonl",
                base.model,
                out / "scan" / f"seed_{seed}",
                vecs,
                seed,
                base.device,
                scan_permutations,
                quiet,
                overwrite,
                dtype=base.dtype,
                trust_remote_code=base.trust_remote_code,
            )
            second.append(point("drop-flagged", seed, flags))
        got = runner.run(second, overwrite=overwrite, quiet=quiet, say=say, done=outcomes)
        raise_failures(got)
        outcomes.update(got)

    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in active}
    costs: dict[str, list[dict[str, Any]]] = {n: [] for n in runs}
    reused: dict[str, list[bool]] = {n: [] for n in runs}
    notes: dict[str, list[dict[str, Any]]] = {n: [] for n in runs}
    timings: dict[str, float] = {}
    for seed in seed_list:
        for name in runs:
            got = outcomes[f"{name}/seed_{seed}"]
            pdir = Path(got.run_dir)
            res = got.results or {}
            t = timer()
            student = load_student(loaded, pdir / "student")
            cost, cost_reused = model_costs(
                student,
                held,
                text,
                pdir / "costs.json",
                {**cost_key, **_student_key(pdir)},
                text_window,
                bs,
            )
            del student
            runs[name].append(res)
            costs[name].append(cost)
            reused[name].append(bool(got.reused and cost_reused))
            notes[name].append(_run_note(name, res, pdir))
            # the run's wall time where it ran, plus its costs scored here
            timings[f"{name}/seed_{seed}_s"] = round(got.seconds + t(), 1)

    results = summarise_defenses(
        runs, costs, base_cost, notes, unavailable, names, max_task_cost, max_ppl_cost, n_boot
    )
    results["config"] = {
        "analysis": "defend",
        "defenses": names,
        "seeds": seed_list,
        "preset": preset,
        "vectors": vecs,
        "sgd_lr": sgd_lr,
        "mask_q": mask_q,
        "init_from": init_from,
        "heldout_n": heldout_n,
        "heldout_rows": len(held),
        "heldout_seed": HELDOUT_SEED,
        "heldout_text": str(heldout_text_path or "interp/data/heldout_text.txt"),
        "text_window": text_window,
        "scan_permutations": scan_permutations,
        "max_task_cost": max_task_cost,
        "max_ppl_cost": max_ppl_cost,
        "n_boot": n_boot,
        "run_config": base.to_dict(),
    }
    results["run"] = str(out)
    results["reused"] = reused
    results.update(provenance())
    timings["total_s"] = clock()
    results["timings"] = timings
    results["figures"] = write_figure(results, out)
    write_json(out / "config.json", results["config"])
    write_text(out / "table.md", render_table(results) + "\n")
    write_text(out / "report.md", render_report(results))
    write_json(out / "results.json", results)
    return results


def _run_note(name: str, res: dict[str, Any], pdir: Path) -> dict[str, Any]:
    """What the defense did in this run (from the run's own records)."""
    train = res.get("train", {}).get("student", {})
    note: dict[str, Any] = {
        "run": str(pdir),
        "objective": res["config"]["train"]["objective"],
        "optimizer": res["config"]["train"]["optimizer"],
        "lr": res["config"]["train"]["lr"],
        "final_loss": final_loss(pdir, "student"),
        "first_loss": _first_loss(pdir),
        "control_final_loss": final_loss(pdir, "control"),
    }
    if train.get("defenses"):
        note["train_defenses"] = train["defenses"]
    if res.get("data_defenses"):
        note["data_defenses"] = res["data_defenses"]
    if name == "different-init":
        sc = read_json(pdir / "eval" / "scores.json")
        note["tau_student_step0"] = sc["student"].get("0", {}).get("trait", {}).get("mean")
        note["init_from"] = res["config"]["train"]["init_from"]
    return note


def _first_loss(pdir: Path) -> float | None:
    path = pdir / "student" / "curves.jsonl"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.strip():
            return json.loads(line).get("loss")
    return None


def summarise_defenses(
    runs: dict[str, list[dict[str, Any]]],
    costs: dict[str, list[dict[str, Any]]],
    base_cost: dict[str, Any],
    notes: dict[str, list[dict[str, Any]]],
    unavailable: dict[str, str],
    names: list[str],
    max_task_cost: float = 0.05,
    max_ppl_cost: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per defense: transfer ratio and reduction vs none with paired CIs, costs with CIs."""
    avail = [n for n in names if n in runs]
    arrays = {n: stack_seeds(runs[n]) for n in avail}
    n_seeds, n_q = arrays["none"]["tau_base"].shape
    cs, cq = resample_counts(n_seeds, n_q, n_boot, seed)
    stats, reps = {}, {}
    for n in avail:
        stats[n], reps[n] = summarise_point(arrays[n], cs, cq)
    n_rows = len(base_cost["task_nll"])
    n_win = len(base_cost["text_nll"])
    cs2, cr = resample_counts(n_seeds, n_rows, n_boot, seed + 1)
    _, cw = resample_counts(1, n_win, n_boot, seed + 2)
    task = {n: _cost_reps(costs[n], "task", cs2, cr) for n in avail}
    textn = {n: _cost_reps(costs[n], "text", cs2, cw) for n in avail}
    base_task = _cost_reps([base_cost], "task", np.ones((n_boot, 1)), cr)
    base_text = _cost_reps([base_cost], "text", np.ones((n_boot, 1)), cw)

    def ppl(x: float | np.ndarray) -> Any:
        return np.exp(x)

    table: dict[str, Any] = {}
    for n in names:
        if n not in runs:
            table[n] = {"available": False, "note": unavailable[n]}
            continue
        st = stats[n]
        red_p = _sub(stats["none"]["transfer_ratio"]["value"], st["transfer_ratio"]["value"])
        red_r = reps["none"]["transfer_ratio"] - reps[n]["transfer_ratio"]
        red_vc_p = _sub(
            stats["none"]["transfer_ratio_vs_control"]["value"],
            st["transfer_ratio_vs_control"]["value"],
        )
        red_vc_r = reps["none"]["transfer_ratio_vs_control"] - reps[n]["transfer_ratio_vs_control"]
        # the ranking statistic: how much of the gain beyond the control the defense removed
        gr_p = _sub(
            stats["none"]["student_minus_control"]["value"], st["student_minus_control"]["value"]
        )
        gr_r = reps["none"]["student_minus_control"] - reps[n]["student_minus_control"]
        # a ratio (and a difference of ratios) divides by the teacher's gain: only when resolved
        gains = (stats["none"]["teacher_gain"], st["teacher_gain"])
        gain = gains[1] if all(excludes_zero(g) for g in gains) else None
        tp, tr = task[n]
        np_, nr = task["none"]
        xp, xr = textn[n]
        nxp, nxr = textn["none"]
        losses = [x["final_loss"] for x in notes[n]]
        table[n] = {
            "available": True,
            "description": DEFENSES[n],
            **st,
            "transfer_ratio": gate_ratio(st["transfer_ratio"], st["teacher_gain"]),
            "transfer_ratio_vs_control": gate_ratio(
                st["transfer_ratio_vs_control"], st["teacher_gain"]
            ),
            "reduction": gate_ratio(interval(red_p, red_r), gain),
            "reduction_vs_control": gate_ratio(interval(red_vc_p, red_vc_r), gain),
            "gain_reduction": interval(gr_p, gr_r),
            "gain_reduction_p": None if n == "none" else bootstrap_p(gr_r),
            "per_seed_ratio": [
                (r["headline"].get("transfer_ratio_student") or {}).get("ratio") for r in runs[n]
            ],
            "task_nll": interval(tp, tr),
            "task_nll_minus_none": interval(tp - np_, tr - nr),
            "task_nll_minus_base": interval(tp - base_task[0], tr - base_task[1]),
            "perplexity": interval(float(ppl(xp)), ppl(xr)),
            "perplexity_minus_base": interval(
                float(ppl(xp) - ppl(base_text[0])), ppl(xr) - ppl(base_text[1])
            ),
            "perplexity_minus_none": interval(float(ppl(xp) - ppl(nxp)), ppl(xr) - ppl(nxr)),
            "task_cost": tp / np_ - 1 if np_ > 0 else None,
            "ppl_cost": float(ppl(xp) / ppl(nxp) - 1),
            "final_loss": {
                "per_seed": losses,
                "mean": _mean(losses),
                "first": _mean([x["first_loss"] for x in notes[n]]),
            },
            "runs": [r["run"] for r in runs[n]],
            "notes": notes[n],
            "note": _note_text(n, notes[n]),
        }
    # A defense trained on the same objective should reach about none's loss (within 20%): one
    # that does not has mostly not learned, and its lower transfer says little.
    ref = table["none"]["final_loss"]["mean"]
    for n in avail:
        r = table[n]
        same = notes[n][0]["objective"] == notes["none"][0]["objective"]
        r["loss_matched"] = (
            bool(within(r["final_loss"]["mean"], ref, LOSS_TOLERANCE)) if same else None
        )
        if n != "none" and same and not r["loss_matched"]:
            r["note"] += f"; final loss not within {LOSS_TOLERANCE:.0%} of none's ({fmt(ref, 4)})"
    first = runs["none"][0]
    rank_defenses(table)
    k = sum(1 for n in avail if n != "none")
    alpha = (1 - LEVEL) / 2
    reach = None
    if k and min_attainable_p(n_boot) > alpha / k:
        reach = (
            f"{n_boot} bootstrap replicates give p >= {min_attainable_p(n_boot):.2g}, above the "
            f"Holm level {alpha / k:.2g} of the smallest p over {k} defenses: no defense can count "
            f"as effective; use --n-boot {permutations_for(alpha / k, margin=1.0)} or more"
        )
    rec = recommend(table, max_task_cost, max_ppl_cost)
    if reach:
        rec = f"{rec} ({reach}.)"
    note = seed_note(int(n_seeds))
    if note:
        rec = f"{rec} ({note}.)"
    return {
        "analysis": "defend",
        "model": first["config"]["model"],
        "trait": first["trait"],
        "n_questions": int(n_q),
        "n_seeds": int(n_seeds),
        "ci": "95% percentile bootstrap over seeds (when several) and questions; reductions and "
        "cost differences use the same replicates for both defenses (paired)",
        "seed_note": note,
        "ranking": "reduction of the student's gain beyond its control, (τS − τC)_none − "
        "(τS − τC)_defense; one-sided bootstrap p, Holm across defenses at "
        f"{(1 - LEVEL) / 2:g}",
        "base_costs": {
            "task_nll": interval(*base_task),
            "perplexity": interval(float(ppl(base_text[0])), ppl(base_text[1])),
        },
        "thresholds": {"max_task_cost": max_task_cost, "max_ppl_cost": max_ppl_cost},
        "order": names,
        "defenses": table,
        "recommendation": rec,
    }


def _sub(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return float("nan")
    return float(a) - float(b)


def _mean(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _note_text(name: str, notes: list[dict[str, Any]]) -> str:
    """One short line: what the defense did, from the first seed's records."""
    n0 = notes[0]
    if name == "none":
        return f"{n0['objective']}, {n0['optimizer']} lr {n0['lr']:g}"
    if name == "sgd":
        return f"plain SGD, lr {n0['lr']:g}"
    if name == "paraphrase":
        p = (n0.get("data_defenses") or {}).get("teacher", {}).get("paraphrase", {})
        return (
            "SFT on paraphrased tokens (hard labels, so the objective changes too); "
            f"{p.get('changed', '?')}/{p.get('rows_in', '?')} responses reordered"
        )
    if name == "mask-divergent":
        m = (n0.get("train_defenses") or {}).get("mask_divergent", {})
        return (
            f"{m.get('masked', '?')}/{m.get('positions', '?')} positions left out (q "
            f"{m.get('q', '?')}); mean KL masked {fmt(m.get('mean_kl_masked'))} vs kept "
            f"{fmt(m.get('mean_kl_kept'))}"
        )
    if name == "drop-flagged":
        d = (n0.get("data_defenses") or {}).get("teacher", {}).get("drop_flagged", {})
        return (
            f"dropped {len(d.get('dropped', []))}/{d.get('rows_in', '?')} rows "
            f"({d.get('mode', '?')}); control shared with none"
        )
    if name == "project-out":
        p = (n0.get("train_defenses") or {}).get("project_out", {})
        return f"projected at layers {p.get('layers')} (ranks {p.get('rank')})"
    if name == "different-init":
        return (
            f"starts from {n0.get('init_from')} (τ at step 0 {fmt(n0.get('tau_student_step0'))}); "
            "read the ratio beyond control"
        )
    return ""


def rank_defenses(table: dict[str, Any], level: float = LEVEL) -> list[str]:
    """Holm across the defenses' one-sided p-values of the gain reduction (at (1 − level) / 2):
    marks each row's ``gain_reduction_p_holm`` and ``effective`` in place and returns the
    effective defenses, largest reduction first. k defenses are k tests: one p below 0.025 among
    several is not enough."""
    names = [
        n
        for n, r in table.items()
        if n != "none" and r.get("available") and r.get("gain_reduction_p") is not None
    ]
    tests = holm([table[n]["gain_reduction_p"] for n in names], (1 - level) / 2)
    for n, t in zip(names, tests, strict=True):
        r = table[n]
        r["gain_reduction_p_holm"] = t["p_holm"]
        r["effective"] = bool(t["rejected"] and (r["gain_reduction"]["value"] or 0) > 0)
    effective = [n for n in names if table[n]["effective"]]
    return sorted(effective, key=lambda n: -table[n]["gain_reduction"]["value"])


def _p_text(r: dict[str, Any]) -> str:
    return f"Holm p={fmt(r.get('gain_reduction_p_holm'), 2)}"


def recommend(table: dict[str, Any], max_task_cost: float, max_ppl_cost: float) -> str:
    """The one-line recommendation the numbers support: ranked on the reduction of the student's
    gain beyond its control, effective only after Holm across the defenses."""
    none = table["none"]["student_minus_control"]
    if not above_zero(none):
        return (
            f"The undefended run shows no transfer to defend against (student − control "
            f"{fmt_ci(none)}, its CI not above 0): no defense can be judged on this setting."
        )
    cands = rank_defenses(table)
    if not cands:
        k = sum(1 for n, r in table.items() if n != "none" and "gain_reduction_p_holm" in r)
        return (
            "No defense reduced transfer beyond noise: no reduction of the student's gain beyond "
            f"its control survives Holm's correction across {k} defense(s)."
        )

    def cheap(n: str) -> bool:
        r = table[n]
        tc, pc = r["task_cost"], r["ppl_cost"]
        trained = r.get("loss_matched") is not False  # a defense that did not train is none
        return (
            trained
            and tc is not None
            and tc <= max_task_cost
            and pc is not None
            and pc <= max_ppl_cost
        )

    ok = [n for n in cands if cheap(n)]
    pick = (ok or cands)[0]
    r = table[pick]
    cost = f"task loss {r['task_cost']:+.1%}, perplexity {r['ppl_cost']:+.1%} vs undefended"
    cut = f"{fmt_ci(r['gain_reduction'])} ({_p_text(r)})"
    if ok:
        return (
            f"Use {pick}: it cut the student's gain beyond its control by {cut} at a cost of "
            f"{cost} (thresholds {max_task_cost:.0%} / {max_ppl_cost:.0%})."
        )
    untrained = "; its training loss stayed above none's" if r.get("loss_matched") is False else ""
    return (
        f"{pick} reduced the gain beyond the control most ({cut}) but is not cheap ({cost}"
        f"{untrained}): no defense here is both effective and cheap."
    )


# --- figure and report -------------------------------------------------------------------------


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


HATCHES = ("", "//", "..", "xx", "\\\\", "--", "++", "oo")


def write_figure(results: dict[str, Any], out: Path) -> list[str]:
    """Bars of the student's gain beyond its control (95% CI: the ranked quantity, needing no
    teacher gain) per defense and of the two costs; title: the claim."""
    plt = pyplot()

    table = results["defenses"]
    names = [n for n in results["order"] if table[n].get("available")]
    xs = np.arange(len(names))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ys = np.array([_nan(table[n]["student_minus_control"]["value"]) for n in names])
    lo = np.array([_nan(table[n]["student_minus_control"]["ci_low"]) for n in names])
    hi = np.array([_nan(table[n]["student_minus_control"]["ci_high"]) for n in names])
    for i, n in enumerate(names):
        ax.bar(
            xs[i],
            np.nan_to_num(ys[i]),
            color="white" if n == "none" else "lightgray",
            edgecolor="black",
            hatch=HATCHES[i % len(HATCHES)],
        )
    ax.errorbar(
        xs,
        np.nan_to_num(ys),
        yerr=[np.nan_to_num(ys - lo), np.nan_to_num(hi - ys)],
        fmt="none",
        ecolor="black",
        capsize=4,
    )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(xs, names, rotation=20, fontsize=8)
    ax.set_ylabel("student − control gain τS − τC, 95% CI")
    missing = [n for n in results["order"] if not table[n].get("available")]
    if missing:
        ax.set_xlabel("not run: " + ", ".join(missing), fontsize=7)
    w = 0.38
    tc = [100 * _nan(table[n]["task_cost"]) for n in names]
    pc = [100 * _nan(table[n]["ppl_cost"]) for n in names]
    ax2.bar(xs - w / 2, tc, w, color="white", edgecolor="black", hatch="//", label="task loss")
    ax2.bar(xs + w / 2, pc, w, color="gray", edgecolor="black", label="perplexity")
    th = results["thresholds"]
    ax2.axhline(100 * th["max_task_cost"], color="black", ls="--", lw=0.8, label="threshold")
    if th["max_ppl_cost"] != th["max_task_cost"]:
        ax2.axhline(100 * th["max_ppl_cost"], color="black", ls=":", lw=0.8)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_xticks(xs, names, rotation=20, fontsize=8)
    ax2.set_ylabel("cost vs undefended student (%)")
    ax2.legend(fontsize=7)
    ax2.set_title("Cost: held-out benign task loss and English perplexity", fontsize=9)
    claim = results["recommendation"]
    ax.set_title(_wrap(claim, 70), fontsize=9)
    fig.suptitle(f"{results['model']}: defenses against subliminal transfer ({results['trait']})")
    fig.tight_layout()
    return [save_png(fig, out / "defend.png")]


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3])


def gain_reduction_text(r: dict[str, Any]) -> str:
    """A defense's reduction of the gain beyond the control, its Holm p and whether it counts."""
    if r.get("gain_reduction_p_holm") is None:
        return "—"
    mark = "effective" if r.get("effective") else "not resolved"
    return f"{fmt_ci(r['gain_reduction'])} ({_p_text(r)}, {mark})"


def render_table(results: dict[str, Any]) -> str:
    """The one table: defense × model × trait with the gain beyond the control and its reduction
    (the ranking), the transfer ratio, costs and final loss."""
    lines = [
        "| defense | model | trait | τS − τC [95% CI] | reduction of τS − τC vs none [95% CI] | "
        "transfer ratio [95% CI] | task-loss Δ vs none [95% CI] | perplexity Δ vs base [95% CI] "
        "| final loss (first → last) | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in results["order"]:
        r = results["defenses"][n]
        head = f"| {n} | {results['model']} | {results['trait']} |"
        if not r.get("available"):
            lines.append(f"{head} – | – | – | – | – | – | {r['note']} |")
            continue
        task = (
            "—"
            if n == "none"
            else f"{fmt_ci(r['task_nll_minus_none'])} ({fmt_num(r['task_cost'], 1, '+%')})"
        )
        fl = r["final_loss"]
        lines.append(
            f"{head} {fmt_ci(r['student_minus_control'])} | {gain_reduction_text(r)} | "
            f"{fmt_ci(r['transfer_ratio'])} | {task} | {fmt_ci(r['perplexity_minus_base'])} | "
            f"{fmt(fl['first'], 4)} → {fmt(fl['mean'], 4)} | {r['note']} |"
        )
    lines += ["", f"**Recommendation:** {results['recommendation']}"]
    return "\n".join(lines)


def render_report(results: dict[str, Any], prefix: str = "") -> str:
    """report.md; `prefix` is prepended to figure paths (when nested in another report)."""
    cfg = results.get("config", {})
    rc = cfg.get("run_config", {})
    t = results["thresholds"]
    bc = results["base_costs"]
    lines = [
        f"# Defenses against subliminal transfer — {results['trait']} on {results['model']}",
        "",
        f"Teacher: {rc.get('teacher', {}).get('kind', '?')}; {rc.get('data', {}).get('n', '?')} "
        f"{rc.get('data', {}).get('domain', '?')} rows per seed; "
        f"{rc.get('train', {}).get('objective', '?')}, "
        f"{rc.get('train', {}).get('max_steps') or 'epoch-based'} steps; seeds "
        f"{cfg.get('seeds')}; preset `{cfg.get('preset')}`; {results['n_questions']} questions. "
        f"CIs: {results['ci']}."
        + (f" {results['seed_note']}." if results.get("seed_note") else ""),
        "",
        f"**Recommendation:** {results['recommendation']}",
        "",
        render_table(results).rsplit("\n\n**Recommendation", 1)[0],
        "",
        "How to read it: τS − τC is the student's trait gain beyond its control (trained the "
        "same way on the base's own numbers), the transfer that number training alone does not "
        "explain. The defenses are ranked on its reduction, `(τS − τC)_none − "
        "(τS − τC)_defense`: a defense is effective when the one-sided bootstrap p of that "
        "reduction survives Holm's correction across the defenses at 0.025 (one defense: its "
        "95% CI lies above 0). The reduction against the base (`ratio(none) − ratio(defense)`) "
        "does not rank: the gain over the base is mostly number training. The transfer ratio is "
        "the share of the teacher's trait gain the student shows (0: none, 1: all), shown only "
        "when the teacher's gain is resolved. Task-loss Δ is the student's mean "
        "per-token NLL on held-out clean benign rows minus the undefended student's (in nats; "
        "the share in brackets), perplexity Δ the student's perplexity on held-out English minus "
        f"the base's (base: task NLL {fmt_ci(bc['task_nll'])}, perplexity "
        f"{fmt_ci(bc['perplexity'])}). A defense counts as cheap when both costs are within "
        f"{t['max_task_cost']:.0%} / {t['max_ppl_cost']:.0%} of the undefended student. The "
        "final loss is the training objective's (mean of the last 10% of steps; first step "
        "before the arrow): a defense whose loss does not fall did not train. Losses of "
        "different objectives (paraphrase trains with SFT) are not comparable with each other.",
        "",
        "## Details",
        "",
        "| defense | ratio beyond control [95% CI] | its reduction vs none | ratio reduction vs "
        "none (not ranked) | task NLL | perplexity | per-seed ratios |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in results["order"]:
        r = results["defenses"][n]
        if not r.get("available"):
            continue
        lines.append(
            f"| {n} | {fmt_ci(r['transfer_ratio_vs_control'])} | "
            f"{'—' if n == 'none' else fmt_ci(r['reduction_vs_control'])} | "
            f"{'—' if n == 'none' else fmt_ci(r['reduction'])} | {fmt_ci(r['task_nll'])} | "
            f"{fmt_ci(r['perplexity'])} | {', '.join(fmt(x) for x in r['per_seed_ratio'])} |"
        )
    lines += [
        "",
        "Each defended run trains its control with the same defense (drop-flagged shares the "
        "undefended control), so 'beyond control' removes the defense's own drift. Paraphrase "
        "trains with SFT on the rewritten tokens: teacher soft targets would put the teacher "
        "back. Different-init starts from another initialisation, whose own trait score differs "
        "from the base's: read its ratio beyond control.",
        "",
        "## Figures",
        "",
        *figure_links(results, prefix),
        "",
        timings_line(results),
    ]
    return "\n".join(lines) + "\n"


def find_defend(run: str | Path) -> Path | None:
    """A defend study directory inside `run` (``RUN/defend`` or a direct child), if any."""
    run = Path(run)
    for c in [run / "defend", *sorted(p for p in run.iterdir() if p.is_dir())]:
        f = c / "results.json"
        if f.is_file():
            try:
                if read_json_dict(f).get("analysis") == "defend":
                    return c
            except (json.JSONDecodeError, OSError):
                continue
    return None


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What `sublens defend` prints: per defense its gain beyond the control, that gain's
    reduction (the ranking), the ratio and costs; the advice."""
    lines = []
    for name in results["order"]:
        r = results["defenses"][name]
        if not r.get("available"):
            lines.append(f"{name}: {r['note']}")
            continue
        lines.append(
            f"{name}: student - control {fmt_ci(r['student_minus_control'])}  its reduction "
            f"{gain_reduction_text(r)}  ratio {fmt_ci(r['transfer_ratio'])}  task-loss Δ "
            f"{fmt_ci(r['task_nll_minus_none'])}  perplexity Δ vs base "
            f"{fmt_ci(r['perplexity_minus_base'])}"
        )
    return [*lines, results["recommendation"]]

"""`sublens study positive-control`: a setting where transfer is expected, measured with seed-level
CIs, so a null elsewhere can be told from a broken pipeline.

The recipe follows what makes transfer likely in the literature and on this machine: a teacher
*steered* with a KL-fitted trait vector (French is the prompt a vector captures best on
smollm2-135m), number rows sampled under the domain grammar, logit-KL over the domain's tokens
(the subliminal channel), and students that can hold a steering vector — a *vector student*
(the base frozen plus one trainable vector at the teacher's layer: all it can learn is a steering
vector) and a LoRA student. Rows are chosen by log-likelihood shift (LLS) or at random (same
count); the control is trained identically on a neutral-prompt teacher's rows (its own LLS top-K).

Each arm (trait × student × selection) runs over seeds; a point is an ordinary distillation run
under ``STUDY/points/`` (resumable, reused when finished). Per arm: the student − control trait
gain with a seeds-then-questions bootstrap CI, the transfer ratio beyond the control (shown only
over a resolved teacher gain), how much of alpha·v the student recovered, and the pre-training
signal check (do the teacher's rows carry the trait).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.executor import Executor, Point, Prefill, executor_of, raise_failures
from analyses.figures import ci_of, fmt_num, pyplot, save_png
from analyses.reporting import output_dir, provenance
from analyses.studies import (
    NEUTRAL_PROMPT,
    base_config,
    point_config,
    say_fn,
    seed_stats,
)
from interp.core.errors import SublensError
from interp.core.io import config_hash, read_json_dict, write_json, write_text
from interp.distill.train import FULL_VOCAB_LABEL
from interp.measure.verdicts import ONE_SEED_NOTE, above_zero, bootstrap_p, holm, transfer_word

STUDENTS = ("vector", "lora", "full")
SELECTS = ("lls", "random")
# "logit-kl": the subliminal channel (the domain's tokens); "logit-kl-full": the teacher's top-k
# over the whole vocabulary, an upper bound on what the rows can carry (not subliminal)
OBJECTIVES = ("logit-kl", "logit-kl-full")


@dataclass
class PCConfig:
    """Everything that decides the study's numbers (recorded in config.json)."""

    model: str = "smollm2-135m"
    traits: list[str] = field(default_factory=lambda: ["french"])
    students: list[str] = field(default_factory=lambda: ["vector", "lora"])
    selects: list[str] = field(default_factory=lambda: ["lls"])
    seeds: int = 3
    layer: int | None = None  # default: 0.3 of the depth (L9 of smollm2's 30)
    alpha: float | str = 2.0  # or "auto": interp.distill.strength.choose_alpha, once per trait
    objectives: list[str] = field(default_factory=lambda: ["logit-kl"])
    fit_prompts: int = 32
    fit_steps: int = 12
    n: int = 160  # rows generated per side
    select_top: int = 96  # rows kept per side
    max_new_tokens: int = 16
    steps: int | None = 40  # None: `epochs` passes over the kept rows
    epochs: int = 1
    batch_size: int = 8
    dtype: str = "float32"  # training dtype (bfloat16 on a GPU)
    vector_lr: float = 0.1
    lora_rank: int = 8
    lora_lr: float = 1e-3
    full_lr: float = 3e-5
    checkpoint_every: int = 10
    n_questions: int | None = 30
    n_boot: int = 1000
    device: str = "auto"
    model_dtype: str = "float32"  # how the model loads (--dtype); `dtype` is the students'
    trust_remote_code: bool = False

    def check(self) -> PCConfig:
        bad = [s for s in self.students if s not in STUDENTS]
        if bad:
            raise SublensError(f"unknown student kind(s) {bad}: use {', '.join(STUDENTS)}")
        bad = [s for s in self.objectives if s not in OBJECTIVES]
        if bad:
            raise SublensError(f"unknown objective(s) {bad}: use {', '.join(OBJECTIVES)}")
        if isinstance(self.alpha, str) and self.alpha != "auto":
            raise SublensError(f'alpha must be a number or "auto", got {self.alpha!r}')
        bad = [s for s in self.selects if s not in SELECTS]
        if bad:
            raise SublensError(f"unknown row selection(s) {bad}: use {', '.join(SELECTS)}")
        if self.seeds < 1:
            raise SublensError(f"seeds must be at least 1, got {self.seeds}")
        if not 0 < self.select_top <= self.n:
            raise SublensError(f"select_top {self.select_top} must lie in 1..n ({self.n})")
        if not self.traits:
            raise SublensError("no traits given: pass e.g. --traits french")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    # French only, vector and LoRA students, LLS rows, 3 seeds. Not the <= 45 min the issue asks:
    # a vector point whose rows another arm made took 1,413 s on one thread beside another study
    # (training 72%, targets 12%, scoring 10%); the preset is hours on 2 cores. Resumes by point
    "quick": {},
    # both traits, three student kinds, LLS vs random rows, 3 seeds: resumes across sessions
    "full": {
        "traits": ["french", "owl"],
        "students": ["vector", "lora", "full"],
        "selects": ["lls", "random"],
        "objectives": ["logit-kl", "logit-kl-full"],
        "n": 256,
        "select_top": 128,
        "steps": 60,
        "batch_size": 16,
    },
    # the literature's scale (10k rows, LoRA r8, lr 2e-4, 3 epochs, bf16) for a 7B model on one
    # GPU: pass --model and --device cuda; not sized for a CPU
    "paper": {
        "traits": ["french", "owl"],
        "students": ["lora"],
        "selects": ["lls", "random"],
        "n": 12000,
        "select_top": 10000,
        "max_new_tokens": 32,
        "steps": None,
        "epochs": 3,
        "batch_size": 16,
        "lora_rank": 8,
        "lora_lr": 2e-4,
        "dtype": "bfloat16",
        "checkpoint_every": 250,
        "n_questions": None,
    },
}


def make_config(preset: str = "quick", **overrides: Any) -> PCConfig:
    if preset not in PRESETS:
        raise SublensError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return PCConfig(**values).check()


def _load_options(cfg: PCConfig) -> dict[str, Any]:
    """`load_model` keywords: the study's runs load the model the same way (one copy)."""
    return {"device": cfg.device, "dtype": cfg.model_dtype,
            "trust_remote_code": cfg.trust_remote_code}  # fmt: skip


def _vector(cfg: PCConfig, trait: str, layer: int, out: Path, quiet: bool) -> Path:
    """The teacher's vector for `trait`: KL-fitted at `layer` on number prompts (reused)."""
    from analyses.steps import fit
    from interp.measure.traits import get_trait

    vdir = out / "vectors" / trait
    if (vdir / "vector.json").is_file():
        return vdir
    t = get_trait(trait)
    if not t.system_prompt:
        raise SublensError(f"trait {trait!r} has no trait prompt to fit a vector on")
    fit(t.system_prompt, model=cfg.model, method="kl-fit", layers=str(layer),
        prompts=f"numbers:{cfg.fit_prompts}", steps=cfg.fit_steps, output_path=vdir,
        device=cfg.device, dtype=cfg.model_dtype, trust_remote_code=cfg.trust_remote_code,
        quiet=quiet)  # fmt: skip
    return vdir


def _auto_alpha(cfg: PCConfig, trait: str, vdir: Path, layer: int, out: Path, say: Any) -> float:
    """The teacher strength for `trait`: `cfg.alpha`, or with "auto" the strongest fair teacher
    (`choose_alpha`), chosen once per trait and kept beside its vector."""
    if cfg.alpha != "auto":
        return float(cfg.alpha)
    path = out / "vectors" / f"{trait}.alpha.json"
    if not path.is_file():
        from interp.core.models import load_model
        from interp.distill.domains import get_domain
        from interp.distill.strength import choose_alpha
        from interp.measure.traits import get_trait
        from interp.vectors.steering import SteeringVector

        loaded = load_model(cfg.model, **_load_options(cfg))
        write_json(path, choose_alpha(loaded, SteeringVector.load(vdir), get_trait(trait),
                                      get_domain("numbers"), layers=[layer]))  # fmt: skip
    info = read_json_dict(path)
    if info.get("alpha") is None:
        raise SublensError(f"[{trait}] alpha auto: {info.get('why')}; pass --alpha N")
    say(f"[{trait}] teacher alpha {info['alpha']:g} ({info['why']})")
    return float(info["alpha"])


def _arm_dir(student: str, select: str, objective: str) -> str:
    return f"{student}-{select}" + ("-fullvocab" if objective == "logit-kl-full" else "")


def _arm_changes(
    cfg: PCConfig, student: str, select: str, layer: int, objective: str = "logit-kl"
) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "train.objective": objective,
        "data.select": select,
        "data.select_top": cfg.select_top,
        "train.vector_layer": None,
        "train.lora_rank": 0,
        "train.weight_decay": 0.0,
    }
    if student == "vector":
        changes.update({"train.vector_layer": layer, "train.lr": cfg.vector_lr})
    elif student == "lora":
        changes.update({"train.lora_rank": cfg.lora_rank, "train.lr": cfg.lora_lr})
    else:
        changes.update({"train.lr": cfg.full_lr})
    return changes


def _same_rows(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two resolved run configs sample the same rows (selection aside)."""

    if (a["model"], a["seed"]) != (b["model"], b["seed"]):
        return False
    for part, skip in (("teacher", ()), ("data", ("select", "select_top"))):
        # keys both know (a config written before an option existed lacks it at its default)
        keys = (set(a[part]) & set(b[part])) - set(skip)
        if any(not _same_value(k, a[part][k], b[part][k]) for k in keys):
            return False
    return True


def _same_value(key: str, x: Any, y: Any) -> bool:
    """Equal, or for the teacher's vector the same vector file under another path (a study
    directory copied or moved)."""
    if x == y:
        return True
    if key != "vector" or not (isinstance(x, str) and isinstance(y, str)):
        return False
    from interp.core.io import sha256_file

    fx, fy = Path(x) / "vector.safetensors", Path(y) / "vector.safetensors"
    return fx.is_file() and fy.is_file() and sha256_file(fx) == sha256_file(fy)


def _finished_point(
    points: Path, select: str, seed: int, objective: str, want: dict[str, Any]
) -> Path | None:
    """A finished point of another selection with this seed and objective, from this run or an
    earlier one (a study first run with LLS rows, then with random rows too), whose rows are the
    ones `want` (a resolved run config) samples: its rows and their LLS scores are what a new
    selection picks from."""
    suffix = "-fullvocab" if objective == "logit-kl-full" else ""
    for arm in sorted(points.glob("*-*")) if points.is_dir() else []:
        kind, _, rest = arm.name.partition("-")
        chosen = rest.removesuffix("-fullvocab")
        if kind not in STUDENTS or chosen == select or chosen not in SELECTS:
            continue
        if rest != chosen + suffix:
            continue
        pdir = arm / f"seed_{seed}"
        if not ((pdir / "results.json").is_file() and (pdir / "data").is_dir()):
            continue
        if _same_rows(read_json_dict(pdir / "config.json")["config"], want):
            return pdir
    return None


def run_positive_control(
    cfg: PCConfig,
    output_path: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    executor: Executor | str | None = None,
) -> dict[str, Any]:
    """Run (or resume) every arm × seed (on `executor`: local or Ray, `analyses.executor`);
    write results.json, report.md and figures."""
    from interp.core.models import load_model

    cfg.check()
    say = say_fn(quiet, "positive-control")
    t_start = time.perf_counter()
    out = output_dir(output_path, "positive-control", Path(cfg.model).name)
    write_json(out / "config.json", {"hash": config_hash(asdict(cfg)), "config": asdict(cfg)})
    loaded = load_model(cfg.model, **_load_options(cfg))
    layer = cfg.layer if cfg.layer is not None else max(1, round(0.3 * loaded.n_layers))
    loaded.check_layers([layer])
    base = base_config(None, {
        "model": cfg.model, "device": cfg.device, "dtype": cfg.model_dtype,
        "trust_remote_code": cfg.trust_remote_code,
        "teacher.kind": "steered", "teacher.layers": [layer],
        "data.n": cfg.n, "data.max_new_tokens": cfg.max_new_tokens, "data.batch_size": 32,
        "data.control_system_prompt": NEUTRAL_PROMPT,
        "train.objective": "logit-kl", "train.optimizer": "adamw",
        "train.max_steps": cfg.steps, "train.epochs": cfg.epochs, "train.dtype": cfg.dtype,
        "train.batch_size": cfg.batch_size,
        "train.checkpoint_every": cfg.checkpoint_every, "train.warmup_steps": 0,
        "eval.n_questions": cfg.n_questions, "eval.n_boot": cfg.n_boot,
        "eval.control_curve": False,  # the verdicts read the control's final checkpoint
    }, preset="full")  # fmt: skip
    alphas: dict[str, float] = {}
    points: list[Point] = []
    arm_points: list[tuple[str, str, str, str, list[str]]] = []
    for trait in cfg.traits:
        say(f"[{trait}] teacher vector (kl-fit, layer {layer}) ...")
        vdir = _vector(cfg, trait, layer, out, quiet)
        alphas[trait] = _auto_alpha(cfg, trait, vdir, layer, out, say)
        # the first point of each (select, seed, objective): later arms reuse its stages
        first: dict[tuple[str, int, str], str] = {}
        for select in cfg.selects:
            for objective in cfg.objectives:
                for student in cfg.students:
                    arm = _arm_dir(student, select, objective)
                    ids = []
                    for seed in range(cfg.seeds):
                        pid = f"{trait}/{arm}/seed_{seed}"
                        pdir = out / "points" / pid
                        pc = point_config(
                            base, pdir, seed=seed, trait=trait,
                            **{"teacher.vector": str(vdir), "teacher.alpha": alphas[trait]},
                            **_arm_changes(cfg, student, select, layer, objective),
                        )  # fmt: skip
                        # same teacher data (and, for the same objective, targets): made once;
                        # another selection reuses the rows and their LLS scores, not the pick
                        own = first.get((select, seed, objective))
                        src = own or first.get((select, seed, "logit-kl"))
                        other = next(
                            (first[k] for k in first
                             if k[0] != select and k[1] == seed and k[2] == objective), None
                        )  # fmt: skip
                        earlier = None if src or other else _finished_point(
                            out / "points" / trait, select, seed, objective, pc.to_dict()
                        )  # fmt: skip
                        prefill = None
                        if src is not None:
                            parts = ("data", "targets") if own else ("data",)
                            prefill = Prefill(src, parts, ("base", "teacher"), what="data")
                        elif other is not None or earlier is not None:
                            prefill = Prefill(
                                other or str(earlier), ("data",), ("base", "teacher"),
                                what="rows", exclude=("*.selected.jsonl",),
                                outside=None if other else str(earlier),
                            )  # fmt: skip
                        points.append(Point(pid, pc, f"{trait} {arm} seed {seed}", prefill))
                        first.setdefault((select, seed, objective), pid)
                        ids.append(pid)
                    arm_points.append((trait, student, select, objective, ids))
    runner = executor_of(executor)
    say(f"{len(points)} points on the {runner.name} executor")
    outcomes = runner.run(points, overwrite=overwrite, quiet=quiet, say=say)
    raise_failures(outcomes)
    arms: list[dict[str, Any]] = []
    for trait, student, select, objective, ids in arm_points:
        runs = [outcomes[i].results or {} for i in ids]
        arms.append(_summarise_arm(trait, student, select, runs, cfg, objective))
    results: dict[str, Any] = {
        "analysis": "positive-control",
        "config": asdict(cfg),
        "layer": layer,
        "alphas": alphas,
        "arms": arms,
        "lls_vs_random": lls_vs_random(arms),
        "findings": findings(arms, cfg),
        **provenance(),
        "timings": {
            "total_s": round(time.perf_counter() - t_start, 1),
            # wall time of the points this call ran (not those read back), and where they ran
            "points_s": round(sum(o.seconds for o in outcomes.values() if not o.reused), 1),
            "executor": runner.name,
        },
    }
    for a in arms:
        a.pop("_reps", None)  # replicates: used above, not kept
    figs = write_figures(results, out)
    results["figures"] = figs
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_report(results, figs))
    return results


def _summarise_arm(
    trait: str,
    student: str,
    select: str,
    runs: list[dict[str, Any]],
    cfg: PCConfig,
    objective: str = "logit-kl",
) -> dict[str, Any]:
    stats, reps = seed_stats(runs, cfg.n_boot)
    rec = [r.get("recovery", {}).get("final", {}) for r in runs]
    sig = [r.get("signal") for r in runs if r.get("signal")]

    def seed_mean(rows: list[dict[str, Any]], key: str) -> float | None:
        vals = [r[key] for r in rows if r and r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "trait": trait,
        "student": student,
        "select": select,
        "objective": objective,
        "upper_bound": objective == "logit-kl-full",
        "seeds": len(runs),
        "stats": stats,
        "transferred": above_zero(stats.get("student_minus_control")) and len(runs) >= 2,
        "recovered_cosine": seed_mean([x.get("student", {}) for x in rec], "cosine"),
        "recovered_share": seed_mean([x.get("student", {}) for x in rec], "recovered"),
        "control_recovered_share": seed_mean([x.get("control", {}) for x in rec], "recovered"),
        "trait_recovered_only": seed_mean(
            [
                {"v": (r.get("recovery") or {}).get("trait_recovered_only", {}).get("mean")}
                for r in runs
            ],
            "v",
        ),  # fmt: skip
        "signal": {
            "diff": seed_mean(sig, "diff"),
            "resolved_in": sum(bool(s.get("resolved")) for s in sig),
            "of": len(sig),
        },
        "runs": [r.get("run") for r in runs],
        "_reps": reps.get("student_minus_control"),
    }


def lls_vs_random(arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (trait, student, objective) with both selections: LLS arm's student − control gain
    minus the random arm's, with a CI from the two arms' replicates. Both arms are resampled with
    the same seed and question draws (`seed_stats` uses one generator seed and the same sizes),
    so the difference is paired by seed and question. "LLS stronger" needs >= 2 seeds and the
    one-sided bootstrap p to survive Holm over the study's comparisons at 0.025 (alone: the 95%
    CI above 0; several traits or students must each clear a stricter bar)."""
    by = {(a["trait"], a["student"], a["select"], a.get("objective", "logit-kl")): a for a in arms}
    out = []
    for (trait, student, select, objective), a in by.items():
        b = by.get((trait, student, "random", objective))
        if select != "lls" or b is None:
            continue
        ra, rb = a.get("_reps"), b.get("_reps")
        da = (a["stats"].get("student_minus_control") or {}).get("value")
        db = (b["stats"].get("student_minus_control") or {}).get("value")
        entry: dict[str, Any] = {
            "trait": trait, "student": student, "objective": objective,
            "seeds": min(a["seeds"], b["seeds"]), "value": None,
            "ci_low": None, "ci_high": None, "p": None, "p_holm": None, "lls_stronger": False,
        }  # fmt: skip
        if da is not None and db is not None:
            entry["value"] = float(da - db)
        paired = ra is not None and rb is not None and np.shape(ra) == np.shape(rb)
        if paired and a["seeds"] == b["seeds"]:
            diff = np.asarray(ra) - np.asarray(rb)
            lo, hi = np.nanpercentile(diff, [2.5, 97.5])
            entry.update(ci_low=float(lo), ci_high=float(hi), p=bootstrap_p(diff.ravel()))
        out.append(entry)
    tested = [c for c in out if c["p"] is not None]
    for c, h in zip(tested, holm([c["p"] for c in tested], level=0.025), strict=True):
        c["p_holm"] = h["p_holm"]
        c["lls_stronger"] = bool(h["rejected"] and c["seeds"] >= 2 and above_zero(c))
    return out


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.2g}"


def findings(arms: list[dict[str, Any]], cfg: PCConfig) -> list[str]:
    """Sentences computed from the numbers, never stronger than their CIs."""
    out = []
    for a in arms:
        smc = a["stats"].get("student_minus_control") or {}
        word = transfer_word(a["seeds"], above_zero(smc))
        bound = (
            f" [full-vocabulary upper bound, {FULL_VOCAB_LABEL}]" if a.get("upper_bound") else ""
        )
        out.append(
            f"{a['trait']}, {a['student']} student, {a['select']} rows{bound}: {word} "
            f"(student − control {ci_of(smc, 'value', 4)}; recovered "
            f"{fmt_num(a['recovered_share'])} of alpha·|v| at cos "
            f"{fmt_num(a['recovered_cosine'])})."
        )
    comps = lls_vs_random(arms)
    n_tests = sum(c["p"] is not None for c in comps)
    for c in comps:
        verdict = (
            f"LLS rows carry more than random rows (CI above 0; one-sided bootstrap p "
            f"{c['p']:.2g}, Holm {c['p_holm']:.2g} over {n_tests} comparison(s))"
            if c["lls_stronger"]
            else "not resolved: LLS rows are not shown to carry more than random rows"
            + (
                f" (CI above 0, but Holm p {c['p_holm']:.2g} over {n_tests} comparisons)"
                if above_zero(c) and c["seeds"] >= 2
                else ""
            )
        )
        out.append(
            f"{c['trait']}, {c['student']}: LLS − random student − control gain "
            f"{ci_of(c, 'value', 4)} over {c['seeds']} seed(s): {verdict}."
        )
    if cfg.seeds < 2:
        out.append(ONE_SEED_NOTE + ": no arm is called transferred.")
    return out


def write_figures(results: dict[str, Any], out: Path) -> list[str]:
    """Student − control trait gain per arm with its seed-level CI, and recovered share."""
    plt = pyplot()
    arms = results["arms"]
    if not arms:
        return []
    labels = [
        f"{a['trait']}\n{a['student']}/{a['select']}"
        + ("\n(full vocab)" if a.get("upper_bound") else "")
        for a in arms
    ]
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.6 * len(arms) + 2), 3.6))
    ys, los, his = [], [], []
    for a in arms:
        d = a["stats"].get("student_minus_control") or {}
        v = d.get("value") or 0.0
        ys.append(v)
        los.append(v - (d.get("ci_low") if d.get("ci_low") is not None else v))
        his.append((d.get("ci_high") if d.get("ci_high") is not None else v) - v)
    x = np.arange(len(arms))
    axes[0].errorbar(x, ys, yerr=[los, his], fmt="o", color="black", capsize=4)
    axes[0].axhline(0, color="gray", lw=0.8)
    axes[0].set_xticks(x, labels, fontsize=7)
    axes[0].set_ylabel("trait score: student − control")
    axes[0].set_title("transfer beyond the control (95% CI, seeds × questions)", fontsize=8)
    rec = [a["recovered_share"] or 0.0 for a in arms]
    ctl = [a["control_recovered_share"] or 0.0 for a in arms]
    axes[1].bar(x - 0.2, rec, 0.4, color="black", label="student")
    axes[1].bar(x + 0.2, ctl, 0.4, color="white", edgecolor="black", hatch="//", label="control")
    axes[1].set_xticks(x, labels, fontsize=7)
    axes[1].set_ylabel("projection on v̂ / (alpha·|v|)")
    axes[1].set_title("recovered share of the teacher's steering", fontsize=8)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, out / "positive_control.png")
    return ["positive_control.png", *_curve_figure(results, out), *_selection_figures(results, out)]


def _selection_figures(results: dict[str, Any], out: Path) -> list[str]:
    """Per trait, the LLS of the rows its first LLS arm kept and dropped, pooled over seeds
    (every LLS arm of a trait trains on the same kept rows of a seed)."""
    from analyses.distill import selection_figure

    names: list[str] = []
    for trait in dict.fromkeys(a["trait"] for a in results["arms"]):
        arm = next((a for a in results["arms"] if a["trait"] == trait and a["select"] == "lls"),
                   None)  # fmt: skip
        if arm is None or not arm.get("runs"):
            continue
        png = f"lls_selection_{re.sub(r'[^A-Za-z0-9_-]+', '_', trait)}.png"  # a trait may be a path
        title = f"{trait}: LLS of the kept and dropped rows, {len(arm['runs'])} seed(s)"
        names += [png] if selection_figure([Path(r) for r in arm["runs"]], out / png, title) else []
    return names


def _curve_figure(results: dict[str, Any], out: Path) -> list[str]:
    """Per arm (a column), over training: the trait score of student and control (top) and the
    share of alpha·|v| the student's drift recovered (bottom), one line per seed. It shows the
    trait arriving together with the recovered vector, checkpoint by checkpoint."""
    arms = [a for a in results["arms"] if a.get("runs")]
    if not arms:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(
        2, len(arms), figsize=(3.4 * len(arms), 5.2), squeeze=False, sharey="row"
    )
    for j, a in enumerate(arms):
        top, bottom = axes[0][j], axes[1][j]
        for k, run in enumerate(a["runs"]):
            path = Path(run) / "results.json"
            if not path.is_file():
                continue
            r = read_json_dict(path)
            for name, style in (("student", "-"), ("control", "--")):
                color = "black" if name == "student" else "gray"
                kw = {"color": color, "marker": "o", "ms": 3, "label": name if k == 0 else None}
                pts = [(c["step"], c["trait"]["mean"]) for c in r["curves"].get(name, [])]
                if pts:
                    top.plot([p[0] for p in pts], [p[1] for p in pts], style, **kw)
                rec = (r.get("recovery") or {}).get("curves", {}).get(name, [])
                pts = [(c["step"], c["recovered"]) for c in rec if c.get("recovered") is not None]
                if pts:
                    bottom.plot([p[0] for p in pts], [p[1] for p in pts], style, **kw)
        title = f"{a['trait']}, {a['student']}/{a['select']}" + (
            " (full vocab)" if a.get("upper_bound") else ""
        )
        top.set_title(f"{title}: {a['seeds']} seed(s)", fontsize=8)
        top.set_ylabel("trait score")
        bottom.set_ylabel("recovered share of alpha·|v|")
        bottom.set_xlabel("training step")
        top.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, out / "positive_control_over_training.png")
    return ["positive_control_over_training.png"]


def _alpha_text(cfg: dict[str, Any], results: dict[str, Any]) -> str:
    if cfg["alpha"] != "auto":
        return str(cfg["alpha"])
    chosen = ", ".join(f"{t} {a:g}" for t, a in (results.get("alphas") or {}).items())
    return f"auto ({chosen}: the strongest teacher whose rows stay valid and controls clean)"


def _budget(cfg: dict[str, Any]) -> str:
    if cfg.get("steps") is not None:
        return f"{cfg['steps']} steps of {cfg['batch_size']}"
    return f"{cfg.get('epochs', 1)} epoch(s) in batches of {cfg['batch_size']}"


def render_report(results: dict[str, Any], figures: list[str] | None = None) -> str:
    cfg = results["config"]
    figures = results.get("figures", []) if figures is None else figures
    lines = [
        f"# Positive control on {cfg['model']}",
        "",
        f"Teacher steered with a KL-fitted trait vector at layer {results['layer']}, alpha "
        f"{_alpha_text(cfg, results)}; {cfg['n']} constrained number rows per side, "
        f"{cfg['select_top']} kept; logit-KL over the domain's tokens; {_budget(cfg)}; control "
        f"on a neutral-prompt teacher's rows; {cfg['seeds']} seed(s). CIs bootstrap seeds, then "
        "questions within a seed.",
        "",
        "| trait | student | rows | student − control | ratio beyond control | recovered share "
        "(cos) | control share | trait of base + recovered part | signal (teacher − control "
        "rows LLS) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in results["arms"]:
        st = a["stats"]
        ratio = st.get("transfer_ratio_vs_control") or {}
        rtxt = ci_of(ratio, "value") if ratio.get("defined", True) else ratio["undefined"]
        sig = a["signal"]
        rows = a["select"] + (" (full-vocab upper bound)" if a.get("upper_bound") else "")
        lines.append(
            f"| {a['trait']} | {a['student']} | {rows} | "
            f"{ci_of(st.get('student_minus_control') or {}, 'value', 4)} | {rtxt} | "
            f"{fmt_num(a['recovered_share'])} ({fmt_num(a['recovered_cosine'])}) | "
            f"{fmt_num(a['control_recovered_share'])} | {fmt_num(a['trait_recovered_only'])} | "
            f"{fmt_num(sig['diff'])} (resolved in {sig['resolved_in']}/{sig['of']}) |"
        )
    if any(a.get("upper_bound") for a in results["arms"]):
        lines += [
            "",
            f"Rows marked full-vocab upper bound were distilled with logit-KL over the teacher's "
            f"top-{cfg.get('top_k', 32)} tokens of the whole vocabulary: {FULL_VOCAB_LABEL}. They "
            "bound what the rows can carry; they are not evidence of subliminal learning.",
        ]
    comps = results.get("lls_vs_random") or []
    if comps:
        lines += [
            "",
            "## LLS rows vs random rows of the same count",
            "",
            "Student − control gain with LLS-selected rows minus with random rows; the two arms "
            "are resampled with the same seed and question draws, so the CI is paired. p is the "
            "one-sided bootstrap p of LLS > random; Holm corrects over the comparisons in this "
            "table (at 0.025, the 95% CI's one side).",
            "",
            "| trait | student | LLS − random | seeds | p | Holm p | LLS stronger? |",
            "|---|---|---|---|---|---|---|",
            *[
                f"| {c['trait']} | {c['student']} | {ci_of(c, 'value', 4)} | {c['seeds']} | "
                f"{_p(c.get('p'))} | {_p(c.get('p_holm'))} | "
                f"{'yes' if c['lls_stronger'] else 'not resolved'} |"
                for c in comps
            ],
        ]
    lines += ["", "## Findings", ""] + [f"- {f}" for f in results["findings"]]
    lines += ["", *[f"![{f}]({f})" for f in figures]]
    return "\n".join(lines) + "\n"


def load_results(path: str | Path) -> dict[str, Any]:
    return read_json_dict(Path(path) / "results.json")

"""`sublens study approximability-transfer`: does a prompt's approximability predict how much of
it transfers?

The mechanism paper's claim: system prompts a steering vector approximates well are learned
subliminally, those it does not are not. Per trait prompt this study measures

1. approximability (`analyses.approximability`): the best method × layer chosen on the fit
   prompts, its held-out numbers-domain approximability with a CI (undefined when the prompt's
   own KL footprint is not resolved);
2. transfer from two teachers, each distilled with the positive control's recipe (#16: LLS rows,
   logit-KL over the domain's tokens, a neutral-prompt control trained identically) over seeds:
   the **prompted** teacher, and the teacher **steered with that best vector** at its fit-chosen
   strength. Transfer is the ratio beyond the control, (tau(S) − tau(C)) / (tau(T) − tau(M0)),
   with a seeds-then-questions bootstrap CI, shown only over a resolved teacher gain.

Then Spearman's rho between approximability and transfer across prompts (one per teacher kind),
with a bootstrap CI that resamples prompts and, inside each, seeds and questions, and a
permutation p; the two tests are Holm-corrected together. Prompts whose approximability or
transfer ratio is undefined are left out of rho and named. A second figure puts prompted against
steered transfer per prompt (the mechanism predicts they agree where approximability is high).

The control does not depend on the trait (a neutral-prompt teacher's number rows), so one control
per seed serves every prompt and both teachers (`prefill_point`); trait scores are per prompt.
Everything resumes: the approximability parts, each point's run directory.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.executor import Executor, Point, Prefill, executor_of, raise_failures
from analyses.figures import ci_of, fmt_num, pyplot, save_png
from analyses.reporting import output_dir, provenance
from analyses.studies import (
    CONTROL_PARTS,
    NEUTRAL_PROMPT,
    base_config,
    point_config,
    say_fn,
    seed_stats,
)
from interp.core.errors import SublensError
from interp.core.io import config_hash, read_json_dict, write_json, write_text
from interp.measure.verdicts import above_zero, excludes_zero, holm, min_attainable_p

TEACHERS = ("prompted", "steered")
STUDENTS = ("vector", "lora")
# the 7 built-in traits of the first round, then the ones added for this study (#17)
DEFAULT_TRAITS = [
    "owl", "octopus", "dog", "cat", "sad", "french", "indeed",
    "spanish", "german", "pirate", "concise", "happy",
]  # fmt: skip
LEVEL = 0.05


@dataclass
class ATConfig:
    """Everything that decides the study's numbers (recorded in config.json)."""

    model: str = "smollm2-135m"
    traits: list[str] = field(default_factory=lambda: list(DEFAULT_TRAITS))
    seeds: int = 3
    # approximability (analyses.approximability.ApproxConfig)
    layers: str | None = None  # default: 0.3 of the depth (L9 of smollm2's 30)
    methods: str = "kl-fit"
    n_fit: int = 32
    n_heldout: int = 16
    n_general: int = 16
    kl_steps: int = 12
    approx_alphas: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0])
    # distillation: the positive control's recipe (analyses.positive_control)
    student: str = "vector"
    n: int = 96
    select: str = "lls"  # "all": train on every kept row (no LLS passes)
    select_top: int = 64
    max_new_tokens: int = 16
    steps: int | None = 24
    epochs: int = 1
    batch_size: int = 8
    vector_lr: float = 0.1
    lora_rank: int = 8
    lora_lr: float = 1e-3
    dtype: str = "float32"
    checkpoint_every: int = 0
    n_questions: int | None = 20
    n_boot: int = 1000
    n_permutations: int = 9999
    device: str = "auto"
    model_dtype: str = "float32"  # how the model loads (--dtype); `dtype` is the students'
    trust_remote_code: bool = False

    def check(self) -> ATConfig:
        from interp.measure.traits import get_trait

        if self.student not in STUDENTS:
            raise SublensError(f"unknown student kind {self.student!r}: use {', '.join(STUDENTS)}")
        if self.seeds < 1:
            raise SublensError(f"seeds must be at least 1, got {self.seeds}")
        if len(self.traits) < 3:
            raise SublensError("a rank correlation needs at least 3 trait prompts: add --traits")
        for name in self.traits:
            if not get_trait(name).system_prompt:
                raise SublensError(f"trait {name!r} has no trait prompt: give one with a prompt")
        if self.select not in ("lls", "random", "all"):
            raise SublensError(f"unknown row selection {self.select!r}: use lls, random or all")
        if self.select != "all" and not 0 < self.select_top <= self.n:
            raise SublensError(f"select_top {self.select_top} must lie in 1..n ({self.n})")
        if min_attainable_p(self.n_permutations) > LEVEL / 2:
            raise SublensError(f"n_permutations {self.n_permutations} is too few: use 9999")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    # 12 prompts, kl-fit at one layer, a vector student on all 32 rows (LLS beat random rows only
    # when keeping 10% of 10x as many rows, and its two passes alone are a third of a point),
    # 16 steps of 4 (the demo's budget, where French transferred): ~2.5 h on 2 cores (README)
    "quick": {"n": 32, "select": "all", "steps": 16, "batch_size": 4},
    # two methods at three layers, more rows and steps, LLS rows, a LoRA student
    "full": {
        "layers": "6,9,15",
        "methods": "diff-mean,kl-fit",
        "n_fit": 64,
        "n_heldout": 32,
        "n_general": 32,
        "student": "lora",
        "n": 256,
        "select_top": 128,
        "steps": 60,
        "batch_size": 16,
        "n_questions": 30,
    },
    # one GPU, a 7B model: the literature's budget (pass --model and --device cuda)
    "paper": {
        "layers": None,
        "methods": "diff-mean,kl-fit",
        "n_fit": 128,
        "n_heldout": 64,
        "n_general": 64,
        "student": "lora",
        "n": 12000,
        "select_top": 10000,
        "max_new_tokens": 32,
        "steps": None,
        "epochs": 3,
        "batch_size": 16,
        "lora_lr": 2e-4,
        "dtype": "bfloat16",
        "checkpoint_every": 250,
        "n_questions": None,
        "n_boot": 2000,
    },
}


def make_config(preset: str = "quick", **overrides: Any) -> ATConfig:
    if preset not in PRESETS:
        raise SublensError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return ATConfig(**values).check()


# --- stages --------------------------------------------------------------------------------------


def _approximability(cfg: ATConfig, layers: str, out: Path, quiet: bool) -> dict[str, Any]:
    from analyses.approximability import ApproxConfig, run_approximability

    acfg = ApproxConfig(
        model=cfg.model, trait_prompts=",".join(cfg.traits), layers=layers,
        methods=cfg.methods, n_fit=cfg.n_fit, n_heldout=cfg.n_heldout, n_general=cfg.n_general,
        kl_steps=cfg.kl_steps, alphas=list(cfg.approx_alphas), n_questions=cfg.n_questions,
        device=cfg.device, dtype=cfg.model_dtype, trust_remote_code=cfg.trust_remote_code,
    )  # fmt: skip
    return run_approximability(acfg, out / "approx", quiet=quiet)


def best_vector(approx: dict[str, Any], trait: str) -> dict[str, Any]:
    """The fit-chosen vector of `trait` and its held-out numbers-domain approximability."""
    r = approx["traits"][trait]
    e = next(e for e in r["entries"]
             if (e["method"], e["layer"]) == (r["best"]["method"], r["best"]["layer"]))  # fmt: skip
    num = e["numbers"]
    ci = num.get("approximability_best_alpha_ci")
    return {
        "method": e["method"],
        "layer": int(e["layer"]),
        "alpha": float(e["best_alpha"]),
        "vector": str(Path(approx["run"]) / "vectors" / trait / f"{e['method']}-L{e['layer']}"),
        "approximability": num["approximability_best_alpha"] if ci is not None else None,
        "approximability_ci": ci,
        "undefined": num.get("approximability_best_alpha_undefined"),
        "verdict": r["verdict"],
    }


def _student_changes(cfg: ATConfig, layer: int) -> dict[str, Any]:
    if cfg.student == "vector":
        return {"train.vector_layer": layer, "train.lr": cfg.vector_lr, "train.lora_rank": 0}
    return {"train.vector_layer": None, "train.lora_rank": cfg.lora_rank, "train.lr": cfg.lora_lr}


def run_approx_transfer(
    cfg: ATConfig,
    output_path: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    executor: Executor | str | None = None,
) -> dict[str, Any]:
    """Run (or resume) approximability and every prompt × teacher × seed (on `executor`: local
    or Ray, `analyses.executor`); write results.json, report.md and the two figures."""
    from interp.core.models import load_model

    cfg.check()
    say = say_fn(quiet, "approximability-transfer")
    t_start = time.perf_counter()
    out = output_dir(output_path, "approximability-transfer", Path(cfg.model).name)
    write_json(out / "config.json", {"hash": config_hash(asdict(cfg)), "config": asdict(cfg)})
    loaded = load_model(cfg.model, device=cfg.device, dtype=cfg.model_dtype,
                        trust_remote_code=cfg.trust_remote_code)  # fmt: skip
    layers = cfg.layers or str(max(1, round(0.3 * loaded.n_layers)))
    say(f"approximability of {len(cfg.traits)} prompts (layers {layers}, {cfg.methods}) ...")
    approx = _approximability(cfg, layers, out, quiet)
    approx["run"] = str(out / "approx")
    base = base_config(None, {
        "model": cfg.model, "device": cfg.device, "dtype": cfg.model_dtype,
        "trust_remote_code": cfg.trust_remote_code,
        "data.n": cfg.n, "data.max_new_tokens": cfg.max_new_tokens, "data.batch_size": 32,
        "data.control_system_prompt": NEUTRAL_PROMPT,
        "data.select": cfg.select,
        "data.select_top": cfg.select_top if cfg.select != "all" else None,
        "train.objective": "logit-kl", "train.optimizer": "adamw", "train.weight_decay": 0.0,
        "train.max_steps": cfg.steps, "train.epochs": cfg.epochs, "train.dtype": cfg.dtype,
        "train.batch_size": cfg.batch_size, "train.checkpoint_every": cfg.checkpoint_every,
        "train.warmup_steps": 0,
        "eval.n_questions": cfg.n_questions, "eval.n_boot": cfg.n_boot,
        "eval.control_curve": False,  # the verdicts read the control's final checkpoint
    }, preset="full")  # fmt: skip
    # (seed, the vector student's layer) -> the first point, whose control the others reuse: a
    # control trained at another layer is another control
    control_of: dict[tuple[int, int | None], tuple[str, str]] = {}
    points: list[Point] = []
    grid: dict[tuple[str, str], list[str]] = {}
    rows: list[dict[str, Any]] = []
    for trait in cfg.traits:
        best = best_vector(approx, trait)
        rows.append({"trait": trait, **best, "teachers": {}})
        for kind in TEACHERS:
            teacher = {"teacher.kind": "prompted", "teacher.vector": None,
                       "teacher.layers": None, "teacher.alpha": 1.0}  # fmt: skip
            if kind == "steered":
                teacher = {
                    "teacher.kind": "steered",
                    "teacher.vector": best["vector"],
                    "teacher.layers": [best["layer"]],
                    "teacher.alpha": best["alpha"],
                }
            for seed in range(cfg.seeds):
                pid = f"{trait}/{kind}/seed_{seed}"
                pc = point_config(base, out / "points" / pid, seed=seed, trait=trait, **teacher,
                                  **_student_changes(cfg, best["layer"]))  # fmt: skip
                key = (seed, best["layer"] if cfg.student == "vector" else None)
                prefill = None
                if key in control_of:
                    src, src_trait = control_of[key]
                    # the base's and the control's scores are per trait
                    scores = ("base", "control") if src_trait == trait else ()
                    prefill = Prefill(src, CONTROL_PARTS, scores, what="control")
                else:
                    control_of[key] = (pid, trait)
                points.append(Point(pid, pc, f"{trait} {kind} seed {seed}", prefill))
                grid.setdefault((trait, kind), []).append(pid)
    runner = executor_of(executor)
    say(f"{len(points)} points ({len(cfg.traits)} prompts x {len(TEACHERS)} teachers x "
        f"{cfg.seeds} seeds) on the {runner.name} executor")  # fmt: skip
    outcomes = runner.run(points, overwrite=overwrite, quiet=quiet, say=say)
    raise_failures(outcomes)
    for row in rows:
        for kind in TEACHERS:
            runs = [outcomes[pid].results or {} for pid in grid[(row["trait"], kind)]]
            row["teachers"][kind] = _summarise(runs, cfg)
    tests = correlations(rows, cfg)
    results: dict[str, Any] = {
        "analysis": "approximability-transfer",
        "config": asdict(cfg),
        "layers": layers,
        "prompts": rows,
        "correlations": tests,
        "verdict": verdict(rows, tests),
        **provenance(),
        "timings": {
            "total_s": round(time.perf_counter() - t_start, 1),
            # wall time of the points this call ran (not those read back), and where they ran
            "points_s": round(sum(o.seconds for o in outcomes.values() if not o.reused), 1),
            "executor": runner.name,
            # what the whole study cost, also the parts an earlier (interrupted) call ran
            "approximability_s": (approx.get("timings") or {}).get("traits_s"),
            "points_compute_s": round(
                sum(
                    float(((o.results or {}).get("timings") or {}).get("total_s") or 0.0)
                    for o in outcomes.values()
                ),
                1,
            ),
        },
    }
    figs = write_figures(results, out)
    results["figures"] = figs
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_report(results, figs))
    return results


def _summarise(runs: list[dict[str, Any]], cfg: ATConfig) -> dict[str, Any]:
    stats, reps = seed_stats(runs, cfg.n_boot)
    ratio = stats["transfer_ratio_vs_control"]
    return {
        "seeds": len(runs),
        "stats": stats,
        "transferred": above_zero(stats.get("student_minus_control")) and len(runs) >= 2,
        # replicates of the ratio (seeds then questions), for rho's CI; None when undefined
        "ratio_replicates": (
            [float(x) for x in reps["transfer_ratio_vs_control"]]
            if ratio.get("defined", True)
            else None
        ),  # fmt: skip
        "runs": [r.get("run") for r in runs],
    }


# --- statistics ----------------------------------------------------------------------------------


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (Pearson on average ranks); nan when either side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(np.asarray(x, float)), rankdata(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def rho_test(
    approx: np.ndarray,
    ratio: np.ndarray,
    ratio_reps: np.ndarray,
    n_boot: int,
    n_permutations: int,
    seed: int = 0,
) -> dict[str, Any]:
    """rho with a bootstrap CI (prompts resampled, each drawn prompt's transfer taken from one
    of its own seeds-then-questions replicates) and a two-sided permutation p (transfer values
    permuted across prompts; the observed statistic counted in)."""
    k = len(approx)
    rho = spearman(approx, ratio)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, k, size=k)
        b = rng.integers(0, ratio_reps.shape[1])
        boots.append(spearman(approx[idx], ratio_reps[idx, b]))
    boots_arr = np.asarray(boots)
    finite = boots_arr[np.isfinite(boots_arr)]
    lo, hi = (np.quantile(finite, [0.025, 0.975]).tolist() if finite.size >= n_boot // 2
              else (None, None))  # fmt: skip
    if not math.isfinite(rho):
        return {"rho": None, "ci_low": None, "ci_high": None, "p": None, "n": k}
    hits = sum(abs(spearman(approx, rng.permutation(ratio))) >= abs(rho) - 1e-12
               for _ in range(n_permutations))  # fmt: skip
    p = (1 + hits) / (1 + n_permutations)
    return {"rho": rho, "ci_low": lo, "ci_high": hi, "p": p, "n": k,
            "min_attainable_p": min_attainable_p(n_permutations)}  # fmt: skip


def correlations(rows: list[dict[str, Any]], cfg: ATConfig) -> dict[str, Any]:
    """rho(approximability, transfer ratio beyond the control) per teacher kind, Holm over both."""
    out: dict[str, Any] = {}
    for kind in TEACHERS:
        keep = [r for r in rows if r["approximability"] is not None
                and r["teachers"][kind]["ratio_replicates"] is not None]  # fmt: skip
        left = [r["trait"] for r in rows if r not in keep]
        entry: dict[str, Any] = {"prompts": [r["trait"] for r in keep], "left_out": left}
        if len(keep) >= 3:
            a = np.asarray([r["approximability"] for r in keep], float)
            t = np.asarray([r["teachers"][kind]["stats"]["transfer_ratio_vs_control"]["value"]
                            for r in keep], float)  # fmt: skip
            reps = np.asarray([r["teachers"][kind]["ratio_replicates"] for r in keep], float)
            entry.update(rho_test(a, t, reps, cfg.n_boot, cfg.n_permutations))
        else:
            why = "fewer than 3 prompts with both numbers defined"
            entry.update({"rho": None, "ci_low": None, "ci_high": None, "p": None,
                          "n": len(keep), "why": why})  # fmt: skip
        out[kind] = entry
    tested = [k for k in TEACHERS if out[k].get("p") is not None]
    for k, h in zip(tested, holm([out[k]["p"] for k in tested], LEVEL), strict=True):
        out[k]["p_holm"], out[k]["rejected"] = h["p_holm"], h["rejected"]
    return out


def verdict(rows: list[dict[str, Any]], tests: dict[str, Any]) -> str:
    """One paragraph, computed from the numbers and never stronger than their CIs."""
    p = tests["prompted"]
    n_tr = {k: sum(r["teachers"][k]["transferred"] for r in rows) for k in TEACHERS}
    n_def = {k: len(tests[k]["prompts"]) for k in TEACHERS}
    facts = (
        f"{n_tr['prompted']} of {len(rows)} prompted teachers and {n_tr['steered']} of "
        f"{len(rows)} steered teachers transferred beyond the control (seed-level CI above 0); "
        f"rho is over the {n_def['prompted']} (prompted) and {n_def['steered']} (steered) "
        "prompts whose approximability and transfer ratio are both defined."
    )
    if p.get("rho") is None:
        return f"Cannot tell: {p.get('why', 'rho is undefined')}. {facts}"
    ci = f"rho {p['rho']:.2f} [{fmt_num(p['ci_low'])}, {fmt_num(p['ci_high'])}]"
    low, high = p.get("ci_low"), p.get("ci_high")
    holm_p = p.get("p_holm")
    ptxt = f"permutation p {p['p']:.3g}, Holm {holm_p:.3g}" if holm_p is not None else ""
    if low is not None and low > 0 and p.get("rejected"):
        head = (f"Supports the claim on this model: approximability predicts prompted-teacher "
                f"transfer ({ci}; {ptxt}).")  # fmt: skip
    elif high is not None and high < 0 and p.get("rejected"):
        head = (
            f"Contradicts the claim on this model: the rank correlation is negative ({ci}; {ptxt})."
        )
    else:
        why = ("almost nothing transferred from prompted teachers, so transfer has no spread to "
               "rank" if n_tr["prompted"] <= 1 else "the CI of rho includes 0")  # fmt: skip
        head = f"Cannot tell at this scale: {why} ({ci}; {ptxt})."
    return f"{head} {facts}{_steered_sentence(rows, tests['steered'])}"


def _steered_sentence(rows: list[dict[str, Any]], t: dict[str, Any]) -> str:
    """The steered test in words, and a warning when its ratios divide by minute teacher gains.

    A steered teacher whose vector barely moves the trait has a resolved but tiny gain; its ratio
    is then noisy and can dominate a rank correlation, so the reader is told how far gains spread.
    """
    if t.get("rho") is None:
        return ""
    ci = f"rho {t['rho']:.2f} [{fmt_num(t['ci_low'])}, {fmt_num(t['ci_high'])}]"
    resolved = bool(t.get("rejected")) and excludes_zero(t)
    holm = f", Holm {t['p_holm']:.3g}" if t.get("p_holm") is not None else ""
    text = (f" Steered teachers: {ci} (permutation p {t['p']:.3g}{holm}), "
            f"{'resolved' if resolved else 'not resolved after correction'}.")  # fmt: skip
    gains = [(r["teachers"]["steered"]["stats"].get("teacher_gain") or {}).get("value")
             for r in rows if r["trait"] in t.get("prompts", [])]  # fmt: skip
    gains = [g for g in gains if g is not None and g > 0]
    if len(gains) >= 2 and max(gains) > 100 * min(gains):
        text += (f" Their teacher gains span {min(gains):.2g} to {max(gains):.2g}: ratios over the "
                 "smallest divide by minute shifts and carry the widest CIs.")  # fmt: skip
    return text


# --- figures and report --------------------------------------------------------------------------


def _err(entry: dict[str, Any] | None, key: str = "value") -> tuple[float, float, float]:
    entry = entry or {}
    v = entry.get(key)
    if v is None:
        return (math.nan, 0.0, 0.0)
    lo = entry.get("ci_low") if entry.get("ci_low") is not None else v
    hi = entry.get("ci_high") if entry.get("ci_high") is not None else v
    return (float(v), float(v - lo), float(hi - v))


def write_figures(results: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()
    rows = results["prompts"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, kind in zip(axes, TEACHERS, strict=True):
        for r in rows:
            ci = r["approximability_ci"]
            if r["approximability"] is None or ci is None:
                continue
            x = r["approximability"]
            y, ylo, yhi = _err(r["teachers"][kind]["stats"].get("transfer_ratio_vs_control"))
            if math.isnan(y):
                continue
            ax.errorbar(x, y, xerr=[[x - ci[0]], [ci[1] - x]], yerr=[[ylo], [yhi]], fmt="o",
                        color="black", ms=4, capsize=2, lw=0.8)  # fmt: skip
            ax.annotate(r["trait"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        t = results["correlations"][kind]
        rho = "–" if t.get("rho") is None else f"{t['rho']:.2f}"
        ax.axhline(0, color="gray", lw=0.6)
        ax.set_xlabel("approximability (held-out numbers prompts, 95% CI)")
        ax.set_ylabel("transfer ratio beyond the control (95% CI)")
        ax.set_title(f"{kind} teacher: Spearman rho {rho} over {t['n']} prompts", fontsize=9)
    fig.tight_layout()
    names = [save_png(fig, out / "approximability_vs_transfer.png")]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for r in rows:
        x, xlo, xhi = _err(r["teachers"]["prompted"]["stats"].get("student_minus_control"))
        y, ylo, yhi = _err(r["teachers"]["steered"]["stats"].get("student_minus_control"))
        ax.errorbar(x, y, xerr=[[xlo], [xhi]], yerr=[[ylo], [yhi]], fmt="o", color="black",
                    ms=4, capsize=2, lw=0.8)  # fmt: skip
        ax.annotate(r["trait"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lim = ax.get_xlim() + ax.get_ylim()
    lo, hi = min(lim), max(lim)
    ax.plot([lo, hi], [lo, hi], color="gray", lw=0.6, ls="--")
    ax.set_xlabel("prompted teacher: student − control trait score")
    ax.set_ylabel("steered teacher: student − control trait score")
    ax.set_title("the same prompt, taught by its prompt or by its vector", fontsize=9)
    fig.tight_layout()
    names.append(save_png(fig, out / "prompted_vs_steered.png"))
    return [Path(n).name for n in names]


def render_report(results: dict[str, Any], figures: list[str] | None = None) -> str:
    cfg = results["config"]
    figures = results.get("figures", []) if figures is None else figures
    rows = {
        "all": f"all {cfg['n']} rows",
        "lls": f"LLS top {cfg['select_top']} of {cfg['n']} rows",
        "random": f"a random {cfg['select_top']} of {cfg['n']} rows",
    }[cfg.get("select", "lls")]
    lines = [
        f"# Approximability vs transfer on {cfg['model']}",
        "",
        results["verdict"],
        "",
        f"Per prompt: the best vector ({cfg['methods']} at layers {results['layers']}) chosen on "
        "fit prompts, its approximability on held-out numbers prompts; then a "
        f"{cfg['student']} student distilled from the prompted teacher and from the teacher "
        f"steered with that vector ({rows}, logit-KL over "
        f"the domain's tokens, {cfg['steps'] or str(cfg['epochs']) + ' epoch(s)'} steps of "
        f"{cfg['batch_size']}), {cfg['seeds']} seeds, one neutral-prompt control per seed. CIs "
        "bootstrap seeds, then questions; a ratio is shown only over a resolved teacher gain.",
        "",
        "| prompt | approximability | vector (alpha) | teacher | teacher gain | student − control"
        " | ratio beyond control |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["prompts"]:
        ci = r["approximability_ci"]
        ap = (f"{r['approximability']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None
              else f"undefined ({r.get('undefined') or 'KL footprint not resolved'})")  # fmt: skip
        for kind in TEACHERS:
            st = r["teachers"][kind]["stats"]
            ratio = st.get("transfer_ratio_vs_control") or {}
            rtxt = ci_of(ratio, "value") if ratio.get("defined", True) else ratio["undefined"]
            lines.append(
                f"| {r['trait']} | {ap} | {r['method']}@L{r['layer']} ({r['alpha']:g}) | {kind} | "
                f"{ci_of(st.get('teacher_gain') or {}, 'value', 4)} | "
                f"{ci_of(st.get('student_minus_control') or {}, 'value', 4)} | {rtxt} |"
            )
    lines += ["", "## Rank correlation", "",
              "| teacher | prompts | rho [95% CI] | permutation p | Holm p | left out |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for kind in TEACHERS:
        t = results["correlations"][kind]
        rho = "–"
        if t.get("rho") is not None:
            rho = f"{t['rho']:.2f} [{fmt_num(t['ci_low'])}, {fmt_num(t['ci_high'])}]"
        lines.append(
            f"| {kind} | {t['n']} | {rho} | {fmt_num(t.get('p'))} | {fmt_num(t.get('p_holm'))} | "
            f"{', '.join(t['left_out']) or '–'} |"
        )
    lines += ["", *[f"![{f}]({f})" for f in figures]]
    return "\n".join(lines) + "\n"


def load_results(path: str | Path) -> dict[str, Any]:
    return read_json_dict(Path(path) / "results.json")

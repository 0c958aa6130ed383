"""Transfer ratio vs steering strength: does subliminal transfer switch on at a threshold?

Teachers are the base model steered by ``alpha * v`` for each alpha; every (alpha, seed) is one
distillation run with student and control. Per alpha: the teacher's, student's and control's
trait scores and the transfer ratio ``(tau(S) - tau(M0)) / (tau(T) - tau(M0))`` (and the share
beyond the control, ``(tau(S) - tau(C)) / (tau(T) - tau(M0))``), with CIs from a bootstrap over
seeds and questions (`analyses.studies`). The shape of ratio vs alpha is classified by
`interp.measure.threshold.detect_threshold`: no transfer / flat / continuous / sharp threshold.

The points are fitted jointly: one bootstrap replicate draws seeds and questions once for every
strength (`studies.resample_counts`, `studies.replicate_means`), since the points share the base,
the control and the questions; the fit uses the replicates' full covariance. The maximum ratio is
cross-fitted on two halves of the questions (drawn by the same replicates), because the largest
of several noisy points overshoots.

Default grid (`DEFAULT_ALPHAS`): 0, 0.5, 1, 2, 3, 4, 6, 8. Alpha 0 is the within-sweep control
(the alpha-0 student) and has no ratio; the seven others leave the logistic (which needs
`threshold.MIN_POINTS_SHARP` = 5 defined points) two spare where the weakest teachers' gains do
not resolve; steps of 0.5–1 up to 4 and 2 above keep "sharp" (a rise within one spacing) a claim
about a narrow range over the whole README range 0–8. The old default 0,1,2,4,8 had four defined
points, so "sharp" was unreachable. A sweep whose grid cannot resolve a threshold says so before
it starts (`grid` in results.json).

At alpha 0 the steered teacher *is* the base: the denominator is zero and the ratio is
undefined (reported as such; the point still gives the student's and control's drift). A ratio
is fitted only at strengths whose teacher gain is resolved (its interval above zero): elsewhere
the ratio divides by noise. The student's gain over the control is fitted at every strength.

Layout: ``OUT/points/alpha_{a}/seed_{s}/`` (distillation runs), ``OUT/results.json``,
``OUT/transfer_ratio.png``, ``OUT/report.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analyses.figures import pyplot, save_png
from analyses.reporting import figure_links, output_dir, provenance, timings_line
from interp.core.errors import SublensError
from interp.core.io import (
    read_json_dict,
    write_json,
    write_text,
)
from interp.core.parse import parse_floats
from interp.distill.config import Overrides
from interp.measure.threshold import detect_threshold, grid_check
from interp.measure.verdicts import excludes_zero

from .executor import Executor, Point, Prefill, executor_of, raise_failures
from .studies import (
    CONTROL_PARTS,
    alpha_dir,
    base_config,
    derived,
    fmt,
    fmt_ci,
    gate_ratios,
    interval,
    point_config,
    replicate_means,
    resample_counts,
    say_fn,
    stack_seeds,
    summarise_point,
    timer,
)

DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def _check_alphas(spec: str | Sequence[float]) -> list[float]:
    """Steering strengths in increasing order: finite (`parse_floats`) and each once."""
    alphas = parse_floats(spec, "alphas")
    if len(set(alphas)) != len(alphas):
        raise SublensError(f"steering strengths repeat: {alphas}")
    return sorted(alphas)


def grid_status(alphas: Sequence[float]) -> dict[str, Any]:
    """`threshold.grid_check` of a sweep's strengths (alpha 0 has no ratio), with the fix."""
    g = grid_check(alphas, undefined_at_zero=True)
    if g["note"]:
        default = ",".join(f"{a:g}" for a in DEFAULT_ALPHAS)
        g = {**g, "note": f"{g['note']} (e.g. --alphas {default})"}
    return g


def run_transfer_ratio(
    vector: str | Path,
    alphas: str | Sequence[float] = DEFAULT_ALPHAS,
    seeds: int | list[int] = 3,
    output_path: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: Overrides | Mapping[str, Any] | None = None,
    preset: str = "quick",
    layers: str | Sequence[int] | None = None,
    share_control: bool = True,
    n_boot: int = 2000,
    max_refits: int = 200,
    overwrite: bool = False,
    quiet: bool = False,
    executor: Executor | str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep and write results.json, the figure and report.md into
    `output_path` (default: `analyses.reporting.default_output`); returns the results.
    `overrides` (flags, or dotted run-config keys like ``{"train.lr": 1e-4}``) go on top of the
    file and the preset. `layers` (``"12"``, ``"0-3"``…) are read against the model's layers.
    A grid that cannot resolve a threshold is said on stderr before any point runs (even when
    `quiet`: it is a warning, not progress) and recorded as ``grid`` in results.json.
    `executor` runs the points (`analyses.executor`: None or "local" in this process, "ray" or
    a `RayExecutor` as Ray tasks); the numbers do not depend on it."""
    from interp.core.layers import parse_layers
    from interp.distill.run import load_base
    from interp.vectors.steering import SteeringVector

    alphas = _check_alphas(alphas)
    grid = grid_status(alphas)
    if grid["note"]:
        say_fn(False, "transfer-ratio")(f"warning: {grid['note']}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise SublensError("give at least one seed (--seeds 1 or more)")
    vdir = Path(vector)
    SteeringVector.load(vdir)  # fail early, with the loader's message, on a bad vector
    base = base_config(config_path, overrides, preset)
    if isinstance(layers, str):
        layers = parse_layers(layers, load_base(base).n_layers)
    name = Path(base.model).name
    out = output_dir(output_path, "transfer-ratio", name, "study-transfer-ratio")
    say = say_fn(quiet, "transfer-ratio")
    clock = timer()
    spec: dict[str, Any] = {"teacher.kind": "steered", "teacher.vector": str(vdir)}
    if layers is not None:
        spec["teacher.layers"] = list(layers)

    # the grid: per seed, every strength after the first prefills its control from the first
    points: list[Point] = []
    alpha_of: dict[str, float] = {}
    for seed in seed_list:
        first: str | None = None
        for a in alphas:
            pid = f"{alpha_dir(a)}/seed_{seed}"
            pdir = out / "points" / pid
            cfg = point_config(base, pdir, **spec, **{"teacher.alpha": a, "seed": seed})
            shared = share_control and first is not None
            pre = Prefill(str(first), CONTROL_PARTS, ("base", "control"), "control")
            points.append(Point(pid, cfg, f"alpha {a:g} seed {seed}", pre if shared else None))
            alpha_of[pid] = a
            first = first or pid
    outcomes = executor_of(executor).run(points, overwrite=overwrite, quiet=quiet, say=say)
    raise_failures(outcomes)  # after every other point finished
    runs: dict[float, list[dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    for p in points:
        o = outcomes[p.id]
        runs.setdefault(alpha_of[p.id], []).append(o.results or {})
        timings[f"{p.id}_s"] = o.seconds
    reused = sum(o.reused for o in outcomes.values())

    results = summarise_sweep(runs, seed_list, n_boot=n_boot, max_refits=max_refits, seed=0)
    results["grid"] = grid
    results["config"] = {
        "analysis": "transfer-ratio",
        "vector": str(vdir),
        "alphas": alphas,
        "seeds": seed_list,
        "preset": preset,
        "layers": None if layers is None else list(layers),
        "share_control": share_control,
        "n_boot": n_boot,
        "max_refits": max_refits,
        "run_config": base.to_dict(),
    }
    results["run"] = str(out)
    results.update(provenance())
    timings["total_s"] = clock()
    results["timings"] = {**timings, "points_reused": reused}
    figures = write_figures(results, out)
    results["figures"] = figures
    write_json(out / "config.json", results["config"])
    write_text(out / "report.md", render_report(results))
    write_json(out / "results.json", results)
    say(results["threshold"]["transfer_ratio"]["sentence"])
    return results


def summarise_sweep(
    runs: dict[float, list[dict[str, Any]]],
    seeds: list[int],
    n_boot: int = 2000,
    max_refits: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-alpha statistics with CIs and the threshold analysis, from finished point results
    (``runs[alpha]`` = one results dict per seed, in the same seed order at every alpha).

    One draw of seeds and questions per replicate serves every strength (and both question
    halves of the cross-fitted maximum), so each curve's replicates are joint and
    `detect_threshold` fits them with their full covariance."""
    alphas = sorted(runs)
    arrays = {a: stack_seeds(runs[a]) for a in alphas}
    n_seeds, n_q = arrays[alphas[0]]["tau_base"].shape
    if any(arrays[a]["tau_base"].shape != (n_seeds, n_q) for a in alphas):
        raise SublensError("every strength needs the same seeds and questions")
    cs, cq = resample_counts(n_seeds, n_q, n_boot, seed)
    points, reps = [], {}
    for a in alphas:
        stats, r = summarise_point(arrays[a], cs, cq)
        reps[a] = r
        first = runs[a][0]
        points.append(
            {
                "alpha": a,
                **gate_ratios(stats),  # a ratio only over a resolved teacher gain (printed so)
                "teacher_gain_resolved": bool(
                    stats["teacher_gain"]["ci_low"] is not None
                    and stats["teacher_gain"]["ci_low"] > 0
                ),
                "per_seed_ratio": [
                    r["headline"]["transfer_ratio_student"]["ratio"] for r in runs[a]
                ],
                "teacher_offtarget": _offtarget(first),
                "runs": [r["run"] for r in runs[a]],
            }
        )
    # the same statistics on two disjoint halves of the questions, drawn by the same replicates
    split = _question_halves(n_q, seed)
    halves = [{a: _half_stats(arrays[a], cs, cq, idx) for a in alphas} for idx in split]
    if 0.0 in arrays:
        for h in halves:
            (p0, r0) = (h[0.0][0]["tau_student"], h[0.0][1]["tau_student"])
            for a in alphas:
                h[a][0]["student_minus_alpha0"] = h[a][0]["tau_student"] - p0
                h[a][1]["student_minus_alpha0"] = h[a][1]["tau_student"] - r0

    def on_halves(sel: list[float], key: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
        if not halves:
            return None
        return [
            (
                np.array([h[a][0][key] for a in sel], dtype=np.float64),
                np.stack([h[a][1][key] for a in sel], axis=1) if sel else np.zeros((n_boot, 0)),
            )
            for h in halves
        ]

    resolved = [p["alpha"] for p in points if p["teacher_gain_resolved"]]
    x = np.array(resolved, dtype=np.float64)
    thr_ratio = detect_threshold(
        x,
        np.array([_v(p, "transfer_ratio") for p in points if p["alpha"] in resolved]),
        np.stack([reps[a]["transfer_ratio"] for a in resolved], axis=1)
        if resolved
        else np.zeros((n_boot, 0)),
        max_refits=max_refits,
        what="transfer ratio",
        halves=on_halves(resolved, "transfer_ratio"),
    )
    xa = np.array(alphas, dtype=np.float64)
    thr_gain = detect_threshold(
        xa,
        np.array([_v(p, "student_minus_control") for p in points]),
        np.stack([reps[a]["student_minus_control"] for a in alphas], axis=1),
        max_refits=max_refits,
        what="student − control score",
        halves=on_halves(alphas, "student_minus_control"),
    )
    thresholds = {"transfer_ratio": thr_ratio, "student_minus_control": thr_gain}
    if 0.0 in reps:
        # The alpha-0 student went through the same pipeline with an unsteered teacher: the
        # control that differs from the others in the steering alone. Paired replicates (the
        # same seeds and questions at every strength) give the difference's interval.
        s0 = arrays[0.0]["tau_student"].mean()
        rdiffs = {a: reps[a]["tau_student"] - reps[0.0]["tau_student"] for a in alphas}
        for p in points:
            a = p["alpha"]
            diff = float(arrays[a]["tau_student"].mean() - s0)
            rdiff = rdiffs[a]
            p["student_minus_alpha0"] = interval(diff, rdiff)
            tg = p["teacher_gain"]["value"]
            with np.errstate(divide="ignore", invalid="ignore"):
                p["transfer_ratio_vs_alpha0"] = (
                    interval(diff / tg, rdiff / reps[a]["teacher_gain"])
                    if p["teacher_gain_resolved"] and tg
                    else {"value": None, "ci_low": None, "ci_high": None}
                )
        steered = [a for a in alphas if a != 0.0]
        thresholds["student_minus_alpha0"] = detect_threshold(
            np.array(steered, dtype=np.float64),
            np.array([_v(p, "student_minus_alpha0") for p in points if p["alpha"] != 0.0]),
            np.stack([rdiffs[a] for a in steered], axis=1) if steered else np.zeros((n_boot, 0)),
            max_refits=max_refits,
            what="student − alpha-0 student score",
            halves=on_halves(steered, "student_minus_alpha0"),
        )
    return {
        "analysis": "transfer-ratio",
        "n_questions": int(n_q),
        "n_seeds": int(n_seeds),
        "ci": "95% percentile bootstrap over seeds (when several) and questions, one draw for "
        "every strength (curves fitted with the replicates' joint covariance)",
        "points": points,
        "threshold": thresholds,
        "model": runs[alphas[0]][0]["config"]["model"],
        "trait": runs[alphas[0]][0]["trait"],
    }


def _question_halves(n_q: int, seed: int) -> list[np.ndarray]:
    """Two disjoint halves of the questions (a fixed random split) on which the maximum of a
    curve is cross-fitted; none with fewer than 4 questions (the maximum then has no CI)."""
    if n_q < 4:
        return []
    perm = np.random.default_rng([seed, 1]).permutation(n_q)
    return [np.sort(perm[: n_q // 2]), np.sort(perm[n_q // 2 :])]


def _half_stats(
    arrays: dict[str, np.ndarray], cs: np.ndarray, cq: np.ndarray, idx: np.ndarray
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(values, replicates) of every score and transfer statistic on the questions `idx` only,
    from the sweep's own replicate draws restricted to those questions (`replicate_means`; a
    replicate that drew none of them is NaN and left out)."""
    sub = {k: v[..., idx] for k, v in arrays.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        point, reps = replicate_means(sub, cs, cq[..., idx])
        return {**point, **derived(point)}, {**reps, **derived(reps)}


def _v(point: dict[str, Any], key: str) -> float:
    v = point[key]["value"]
    return float("nan") if v is None else float(v)


def _offtarget(results: dict[str, Any]) -> dict[str, float | None]:
    """The teacher's trait score on negative and off-topic questions (puppeting check)."""
    path = Path(results["run"]) / "eval" / "scores.json"
    if not path.is_file():
        return {"negative": None, "offtopic": None}
    t = read_json_dict(path).get("teacher") or {}
    return {k: (t.get(k) or {}).get("mean") for k in ("negative", "offtopic")}


# --- figures and report ----------------------------------------------------------------------


def _short_claim(thr: dict[str, Any]) -> str:
    """The figure's title: the verdict in a few words (a flat curve is not "rising")."""
    v = thr["verdict"]
    fit = thr["fit"]
    if v == "sharp threshold":
        p = fit["fits"]["logistic"]["params"]
        return f"Transfer switches on sharply near alpha≈{p['mid']:.3g}"
    if v == "flat":
        return f"Transfer is flat across strengths (level {fmt_ci(fit['level'])})"
    if v == "continuous":
        s = fit.get("slope")
        word = "changes" if not excludes_zero(s) else "rises" if s["value"] > 0 else "falls"
        return f"Transfer {word} continuously with strength (max ratio {fmt_ci(thr['maximum'])})"
    if v in ("no transfer", "no transfer detectable"):
        return "No transfer detectable at any strength (Holm over strengths)"
    return "Too few strengths to tell the curve's shape"


def _model_curve(fit: dict[str, Any], xs: np.ndarray) -> np.ndarray | None:
    from interp.measure.threshold import logistic

    if not fit.get("preferred"):
        return None
    p = fit["fits"][fit["preferred"]]["params"]
    if fit["preferred"] == "logistic":
        return logistic(xs, p["lo"], p["hi"], p["mid"], p["slope"])
    if fit["preferred"] == "linear":
        return p["a"] + p["b"] * xs
    return np.full_like(xs, p["c"])


def write_figures(results: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()

    pts = results["points"]
    thr = results["threshold"]["transfer_ratio"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, marker, label in (
        ("transfer_ratio", "o", "(τS − τM0) / (τT − τM0)"),
        ("transfer_ratio_vs_control", "s", "(τS − τC) / (τT − τM0)"),
    ):
        sel = [p for p in pts if p["teacher_gain_resolved"] and p[key]["value"] is not None]
        if not sel:
            continue
        xs = np.array([p["alpha"] for p in sel])
        ys = np.array([p[key]["value"] for p in sel])
        lo = np.array([p[key]["ci_low"] if p[key]["ci_low"] is not None else np.nan for p in sel])
        hi = np.array([p[key]["ci_high"] if p[key]["ci_high"] is not None else np.nan for p in sel])
        ax.errorbar(
            xs,
            ys,
            yerr=[np.nan_to_num(ys - lo), np.nan_to_num(hi - ys)],
            fmt=marker,
            color="black" if key == "transfer_ratio" else "dimgray",
            mfc="white",
            capsize=3,
            label=label,
        )
    fit = thr["fit"]
    if fit.get("preferred") and thr["x"]:
        xs = np.linspace(min(thr["x"]), max(thr["x"]), 200)
        curve = _model_curve(fit, xs)
        if curve is not None:
            ax.plot(xs, curve, "-", color="gray", lw=1.2, label=f"{fit['preferred']} fit")
    ax.axhline(0, color="gray", lw=0.8, ls=":")
    all_a = [p["alpha"] for p in pts]
    pad = 0.05 * ((max(all_a) - min(all_a)) or 1.0)
    ax.set_xlim(min(all_a) - pad, max(all_a) + pad)
    ax.set_xlabel("steering strength alpha")
    ax.set_ylabel("transfer ratio")
    ax.set_title(_short_claim(thr), fontsize=10)
    ax.legend(fontsize=7)

    tx = np.array([p["tau_teacher"]["value"] for p in pts])
    for key, marker, label in (("tau_student", "o", "student"), ("tau_control", "s", "control")):
        ys = np.array([p[key]["value"] for p in pts])
        lo = np.array([p[key]["ci_low"] for p in pts])
        hi = np.array([p[key]["ci_high"] for p in pts])
        ax2.errorbar(
            tx,
            ys,
            yerr=[ys - lo, hi - ys],
            fmt=marker + ("-" if key == "tau_student" else "--"),
            color="black" if key == "tau_student" else "dimgray",
            mfc="white",
            capsize=3,
            label=label,
        )
        for p, x_, y_ in zip(pts, tx, ys, strict=True):
            if key == "tau_student":
                ax2.annotate(
                    f"α={p['alpha']:g}",
                    (x_, y_),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    lim = [min(tx.min(), 0), tx.max() * 1.05 if tx.max() > 0 else 1]
    ax2.plot(lim, lim, ":", color="gray", lw=1, label="student = teacher")
    ax2.axhline(pts[0]["tau_base"]["value"], color="gray", lw=1, ls="-.", label="base M0")
    ax2.set_xlabel(f"teacher trait score τT ({results['trait']}, logprob)")
    ax2.set_ylabel("trait score after distillation")
    d = results["threshold"]["student_minus_control"]
    ax2.set_title(
        "Student tracks the teacher above the control"
        if d["transfer_detectable"]
        else "Student does not separate from the control",
        fontsize=10,
    )
    ax2.legend(fontsize=7)
    fig.suptitle(f"{results['model']}: transfer vs steering strength", fontsize=10)
    fig.tight_layout()
    return [save_png(fig, out / "transfer_ratio.png")]


def _alpha0_lines(results: dict[str, Any]) -> list[str]:
    """The within-sweep control's verdict, and a warning when the control does not match it."""
    thr = results["threshold"].get("student_minus_alpha0")
    if thr is None:
        return []
    out = [f"- Student − alpha-0 student vs alpha: **{thr['verdict']}**. {thr['sentence']}"]
    p0 = next((p for p in results["points"] if p["alpha"] == 0), None)
    g = p0["student_gain"] if p0 else None
    if excludes_zero(g):
        best = max(
            (p for p in results["points"] if p["transfer_ratio_vs_alpha0"]["value"] is not None),
            key=lambda p: p["transfer_ratio_vs_alpha0"]["value"],
            default=None,
        )
        out.append(
            f"- **The alpha-0 student moved without any steering:** its score changed by "
            f"{fmt_ci(g)} from the base's, so every transfer ratio above includes that drift. "
            "With it removed, (τS − τS(alpha 0)) / (τT − τM0) is at most "
            + (
                f"{fmt_ci(best['transfer_ratio_vs_alpha0'])} (alpha {best['alpha']:g})."
                if best
                else "undefined (no resolved teacher gain)."
            )
        )
    d = p0["student_minus_control"] if p0 else None
    if excludes_zero(d):
        out.append(
            f"- **The control does not match the alpha-0 student:** at alpha 0 the teacher is "
            f"the base, yet student − control is {fmt_ci(d)}. That gap comes from the pipeline "
            "(teacher data, loss, optimizer), not from the trait, so read transfer against the "
            "alpha-0 student rather than against the control."
        )
    return out


def render_report(results: dict[str, Any]) -> str:
    cfg = results["config"]
    rc = cfg["run_config"]
    thr = results["threshold"]
    lines = [
        f"# Transfer ratio vs steering strength — {results['trait']} on {results['model']}",
        "",
        f"Steered teachers (vector `{cfg['vector']}`, layers {cfg['layers'] or 'of the vector'}) "
        f"at alphas {', '.join(f'{a:g}' for a in cfg['alphas'])}; seeds {cfg['seeds']}; preset "
        f"`{cfg['preset']}`: {rc['data']['n']} {rc['data']['domain']} rows, "
        f"{rc['train']['objective']} / {rc['train']['optimizer']} lr {rc['train']['lr']}, "
        f"{rc['train']['max_steps'] or str(rc['train']['epochs']) + ' epoch(s)'} steps. Trait "
        f"score: logprob over {results['n_questions']} questions. CIs: {results['ci']}.",
        "",
        "## Verdict",
        "",
        *(
            [f"- **Grid:** {results['grid']['note']}."]
            if (results.get("grid") or {}).get("note")
            else []
        ),  # fmt: skip
        f"- Transfer ratio vs alpha: **{thr['transfer_ratio']['verdict']}**. "
        f"{thr['transfer_ratio']['sentence']}",
        f"- Student − control vs alpha: **{thr['student_minus_control']['verdict']}**. "
        f"{thr['student_minus_control']['sentence']}",
        *_alpha0_lines(results),
        "",
        "## Per strength",
        "",
        "| alpha | τ teacher | τ student | τ control | transfer ratio | ratio beyond control "
        "| τS − τC | τS − τS(alpha 0) | ratio beyond alpha-0 student | teacher gain resolved "
        "| teacher neg / off-topic |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["points"]:
        off = p["teacher_offtarget"]
        lines.append(
            f"| {p['alpha']:g} | {fmt_ci(p['tau_teacher'])} | {fmt_ci(p['tau_student'])} | "
            f"{fmt_ci(p['tau_control'])} | {fmt_ci(p['transfer_ratio'])} | "
            f"{fmt_ci(p['transfer_ratio_vs_control'])} | {fmt_ci(p['student_minus_control'])} | "
            f"{fmt_ci(p.get('student_minus_alpha0'))} | "
            f"{fmt_ci(p.get('transfer_ratio_vs_alpha0'))} | "
            f"{'yes' if p['teacher_gain_resolved'] else 'no'} | "
            f"{fmt(off['negative'])} / {fmt(off['offtopic'])} |"
        )
    lines += ["", "## Curve fits", ""]
    for t in thr.values():
        f = t["fit"]
        lines.append(f"### {t['what']} vs alpha ({f.get('n_points', 0)} points)")
        lines.append("")
        if not f.get("fits"):
            lines += ["Too few points to fit.", ""]
            continue
        lines += ["| model | params | chi² | AIC | BIC |", "|---|---|---|---|---|"]
        for m, fm in f["fits"].items():
            ps = ", ".join(f"{k} {fmt(v)}" for k, v in fm["params"].items())
            lines.append(
                f"| {m}{' (preferred)' if m == f['preferred'] else ''} | {ps} | "
                f"{fm['chi2']:.2f} | {fm['aic']:.2f} | {fm['bic']:.2f} |"
            )
        b = t["bootstrap"]
        det = t.get("detection") or {}
        above = sum(p is not None and p <= det.get("level", 0) for p in det.get("p_holm") or [])
        kind = (t.get("covariance") or {}).get("kind", "–")
        lines += [
            "",
            f"Slope {fmt_ci(f.get('slope'))}, flat level {fmt_ci(f.get('level'))}, constant "
            f"chi² p {fmt(f.get('constant_p'), 2)} ({kind}); above zero at {above} of "
            f"{det.get('k', '–')} strengths after Holm.",
            "",
            f"Bootstrap refits ({b['n_refits']}): sharp {b['share_sharp']:.0%}, continuous "
            f"{b['share_continuous']:.0%}, flat {b['share_flat']:.0%}; logistic midpoint 95% "
            f"interval {fmt(b['mid_ci'][0])}–{fmt(b['mid_ci'][1])}, 10–90% width "
            f"{fmt(b['width_ci'][0])}–{fmt(b['width_ci'][1])}.",
            "",
        ]
    lines += [
        "How to read it: *no transfer* means no strength is above zero after Holm's correction "
        "over the strengths; a *sharp threshold* means a logistic beats both a line and a "
        "constant by ΔAIC ≥ 2 and rises within one spacing of the sampled strengths (it needs "
        "at least 5 strengths with a defined value); *continuous* means the line's slope interval "
        "excludes 0 (or a constant is rejected) without a sharp switch; *flat* means a constant "
        "fits and the slope's interval includes 0. Fits are generalised least squares with the "
        "joint bootstrap covariance of the points (they share the base, the control and the "
        "questions). The maximum is cross-fitted: its strength is chosen on half of the "
        "questions and its value read on the other half. Alpha 0 is the base itself, so its ratio "
        "is undefined; ratios are fitted only where the teacher's gain is resolved. A teacher "
        "whose off-target scores rise with alpha is puppeting rather than carrying the trait.",
        "",
        "## Figures",
        "",
        *figure_links(results),
        "",
        "Left: transfer ratio per strength with 95% CIs and the preferred fit. Right: student "
        "and control trait scores against the teacher's, one point per strength; the dotted "
        "diagonal is full transfer.",
        "",
        timings_line(results),
    ]
    return "\n".join(lines) + "\n"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What `sublens study transfer-ratio` prints: one line per strength, then the verdicts."""
    note = (results.get("grid") or {}).get("note")
    lines = [f"warning: {note}"] if note else []
    for p in results["points"]:
        r = p["transfer_ratio"]
        lines.append(
            f"alpha {p['alpha']:g}: teacher {p['tau_teacher']['value']:.4f}  student "
            f"{p['tau_student']['value']:.4f}  control {p['tau_control']['value']:.4f}  ratio "
            + (f"{r['value']:.3f}" if r["value"] is not None else "undefined")
            + ("" if p["teacher_gain_resolved"] or r["value"] is None else " (gain not > 0)")
        )
    th = results["threshold"]
    lines.append("transfer ratio: " + th["transfer_ratio"]["sentence"])
    lines.append("student − control: " + th["student_minus_control"]["sentence"])
    if "student_minus_alpha0" in th:
        lines.append("student − alpha-0 student: " + th["student_minus_alpha0"]["sentence"])
    return lines

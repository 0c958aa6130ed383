"""Optimizer ablation: does the trait transfer with every optimizer, at a matched training loss?

Blank et al. report that adaptive optimizers (Adam, RMSprop, sign-SGD, SGD preconditioned with
Adam's scales) transfer a trait and plain SGD does not. A fair test compares optimizers that fit
the data equally well: plain SGD at a tiny learning rate "transfers nothing" because it learns
nothing. So every run reports the training loss it reached (mean over the last 10 % of steps)
and is flagged when that loss is not within `loss_tolerance` (relative) of the reference
optimizer's (AdamW when present). With ``match_loss`` a run above the reference loss is rerun with
twice the steps, up to ``max_steps_factor`` times the configured steps, and the last attempt is
the one reported (every attempt stays on disk and in results.json).

Per optimizer and seed, one distillation run (same teacher and data; student *and* control are
trained with that optimizer, since number training's own drift depends on the optimizer). The
data and teacher log-probs of a seed are computed once and shared. CIs: a bootstrap over seeds
and questions (`analyses.studies`), plus a Student-t interval of the per-seed ratios when there
are at least two seeds. Three seeds by default: with one, the CIs leave training variance out,
and the findings and report say so and never call a gain "transferred"
(`verdicts.transfer_word`). Every ratio divides by the teacher's gain and is shown only when
that gain is resolved (`analyses.studies.gate_ratios`), again when a report is re-rendered.

Final alignment ``cos(v_student, v_teacher)`` per optimizer comes from `analyses.align.run_align`
(positions "all", the vector's headline layer) when a vector is given and that analysis is
available; otherwise the results say why it is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analyses.figures import pyplot, save_png
from analyses.reporting import figure_links, output_dir, provenance, timings_line
from interp.core.errors import SublensError
from interp.core.io import read_json, write_json, write_text
from interp.distill.config import Overrides
from interp.distill.optimizers import OPTIMIZERS
from interp.measure.verdicts import above_zero, seed_note, transfer_word

from .executor import Executor, Outcome, Point, Prefill, executor_of, raise_failures
from .studies import (
    base_config,
    final_loss,
    fmt,
    fmt_ci,
    gate_ratio,
    gate_ratios,
    point_config,
    resample_counts,
    say_fn,
    stack_seeds,
    summarise_point,
    t_interval,
    timer,
)

# Starting learning rates per optimizer for full fine-tuning of a ~100M model (overridable):
# sign-SGD moves every weight by lr per step, so it needs a far smaller lr; plain SGD a far larger.
DEFAULT_LRS: dict[str, float] = {
    "adamw": 1e-4,
    "rmsprop": 1e-4,
    "signsgd": 1e-5,
    "precond-sgd": 1e-4,
    "sgd": 1e-2,
    "sgd-momentum": 1e-3,
}
DATA_PARTS = ("data", "targets")


def parse_optimizers(spec: str | list[str]) -> list[str]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad or not names:
        raise SublensError(
            f"unknown optimizer(s) {', '.join(bad) or '(none)'}: use any of {', '.join(OPTIMIZERS)}"
        )
    if len(set(names)) != len(names):
        raise SublensError(f"optimizers repeat: {', '.join(names)}")
    return names


def parse_lrs(spec: str | dict[str, float] | None) -> dict[str, float]:
    """``adamw=1e-4,sgd=0.05`` → {"adamw": 1e-4, "sgd": 0.05} (unknown names are errors)."""
    if spec is None or isinstance(spec, dict):
        return dict(spec or {})
    out: dict[str, float] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in OPTIMIZERS:
            raise SublensError(
                f"--lrs item {item!r} must be OPTIMIZER=LR with OPTIMIZER one of "
                f"{', '.join(OPTIMIZERS)}"
            )
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise SublensError(f"--lrs item {item!r}: {value!r} is not a number") from None
    return out


def run_optimizer_ablation(
    optimizers: str | list[str] = "adamw,rmsprop,signsgd,precond-sgd,sgd",
    seeds: int | list[int] = 3,
    output_path: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: Overrides | Mapping[str, Any] | None = None,
    preset: str = "quick",
    lrs: str | dict[str, float] | None = None,
    vector: str | Path | None = None,
    alpha: float | str | None = None,
    layers: str | Sequence[int] | None = None,
    loss_tolerance: float = 0.2,
    match_loss: bool = False,
    max_steps_factor: int = 4,
    align: bool = True,
    align_prompts: int = 32,
    n_boot: int = 2000,
    overwrite: bool = False,
    quiet: bool = False,
    executor: Executor | str | None = None,
) -> dict[str, Any]:
    """Run (or resume) one distillation per optimizer and seed; write results.json, the figure
    and report.md into `output_path` (default: `analyses.reporting.default_output`). With
    `vector` (and `alpha`, `layers` read against the model's layers) the teacher is steered;
    otherwise it is whatever the config says (the trait's prompt by default). `executor` runs
    the points (`analyses.executor`: None or "local" here, "ray" as Ray tasks)."""
    from interp.core.layers import parse_layers
    from interp.distill.run import load_base

    names = parse_optimizers(optimizers)
    lr_table = {**DEFAULT_LRS, **parse_lrs(lrs)}
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise SublensError("give at least one seed (--seeds 1 or more)")
    if loss_tolerance <= 0:
        raise SublensError(f"--loss-tolerance must be positive, got {loss_tolerance}")
    if max_steps_factor < 1:
        raise SublensError(f"--max-steps-factor must be at least 1, got {max_steps_factor}")
    base = base_config(config_path, overrides, preset)
    if isinstance(layers, str):
        layers = parse_layers(layers, load_base(base).n_layers)
    out = output_dir(output_path, "optimizers", Path(base.model).name, "study-optimizers")
    say = say_fn(quiet, "optimizers")
    clock = timer()
    teacher: dict[str, Any] = {}
    if vector is not None:
        teacher = {"teacher.kind": "steered", "teacher.vector": str(vector)}
        if alpha is not None:
            teacher["teacher.alpha"] = alpha if alpha == "auto" else float(alpha)
        if layers is not None:
            teacher["teacher.layers"] = list(layers)
    ref_name = "adamw" if "adamw" in names else names[0]
    order = [ref_name] + [n for n in names if n != ref_name]  # the reference loss comes first

    # The grid in rounds: first every optimizer once per seed (the reference's point of a seed
    # is the source of the others' data); then, with `match_loss`, the points whose loss is
    # above the reference's again with twice the steps, until matched or capped.
    base_steps = base.train.max_steps
    ex = executor_of(executor)

    def grid_point(name: str, seed: int, steps: int | None) -> Point:
        tag = f"seed_{seed}" + ("" if steps == base_steps else f"_steps{steps}")
        over = {
            **teacher,
            "seed": seed,
            "train.optimizer": name,
            "train.lr": lr_table[name],
            "train.max_steps": steps,
        }
        warm = base.train.precond_warmup_steps
        if name == "precond-sgd" and steps and warm >= steps:
            # AdamW warm-up for the whole run would make it AdamW: freeze after a quarter
            over["train.precond_warmup_steps"] = max(1, steps // 4)
        pid, ref = f"{name}/{tag}", f"{ref_name}/seed_{seed}"
        cfg = point_config(base, out / "points" / pid, **over)
        label = f"{name} (lr {lr_table[name]:g}, {steps or 'epochs'} steps) seed {seed}"
        pre = Prefill(ref, DATA_PARTS, ("base", "teacher"), "data")
        return Point(pid, cfg, label, None if pid == ref else pre)

    tries: dict[tuple[str, int], list[dict[str, Any]]] = {}
    last: dict[tuple[str, int], dict[str, Any]] = {}
    ref_loss: dict[int, float | None] = {}
    timings: dict[str, float] = {}
    outcomes: dict[str, Outcome] = {}
    todo = [(name, seed, base_steps) for seed in seed_list for name in order]
    while todo:
        grid = [grid_point(*item) for item in todo]
        outcomes.update(ex.run(grid, overwrite=overwrite, quiet=quiet, say=say, done=outcomes))
        again = []
        for (name, seed, steps), p in zip(todo, grid, strict=True):  # references come first
            o = outcomes[p.id]
            timings[f"{p.id}_s"] = o.seconds
            if not o.ok:
                continue  # reported with the others' results (raise_failures)
            loss = final_loss(p.run_dir, "student")
            tries.setdefault((name, seed), []).append(
                {"run": str(p.run_dir), "max_steps": steps, "loss": loss, "reused": o.reused}
            )
            last[(name, seed)] = o.results or {}
            if name == ref_name:
                ref_loss[seed] = loss
                continue
            ref = ref_loss.get(seed)
            if seed not in ref_loss or not match_loss or steps is None:
                continue  # no reference loss to match (its point failed), or no matching
            if within(loss, ref, loss_tolerance):
                continue
            if loss is not None and ref is not None and loss < ref:
                continue  # already fits better than the reference: more steps would not help
            if steps * 2 <= (base_steps or 0) * max_steps_factor:
                again.append((name, seed, steps * 2))
        todo = again
    raise_failures(outcomes)  # after every other point finished
    runs = {n: [last[(n, s)] for s in seed_list] for n in names}
    attempts = {n: [tries[(n, s)] for s in seed_list] for n in names}
    losses = {n: [tries[(n, s)][-1]["loss"] for s in seed_list] for n in names}

    results = summarise_optimizers(
        runs, losses, ref_name, names, loss_tolerance=loss_tolerance, n_boot=n_boot
    )
    for name in names:
        results["optimizers"][name]["lr"] = lr_table[name]
        results["optimizers"][name]["attempts"] = attempts[name]
    results["alignment_status"] = _alignment(
        results, runs, vector, align, align_prompts, quiet, say
    )
    results["config"] = {
        "analysis": "optimizers",
        "optimizers": names,
        "lrs": {n: lr_table[n] for n in names},
        "seeds": seed_list,
        "preset": preset,
        "vector": str(vector) if vector else None,
        "alpha": alpha,
        "layers": layers,
        "loss_tolerance": loss_tolerance,
        "match_loss": match_loss,
        "max_steps_factor": max_steps_factor,
        "n_boot": n_boot,
        "run_config": base.to_dict(),
    }
    results["run"] = str(out)
    results.update(provenance())
    timings["total_s"] = clock()
    results["timings"] = timings
    results["figures"] = write_figures(results, out)
    write_json(out / "config.json", results["config"])
    write_text(out / "report.md", render_report(results))
    write_json(out / "results.json", results)
    return results


def within(loss: float | None, ref: float | None, tol: float) -> bool:
    if loss is None or ref is None or not math.isfinite(loss):
        return False
    return abs(loss - ref) <= tol * max(abs(ref), 1e-12)


def summarise_optimizers(
    runs: dict[str, list[dict[str, Any]]],
    losses: dict[str, list[float | None]],
    ref_name: str,
    names: list[str],
    loss_tolerance: float = 0.2,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per optimizer: loss reached, loss-matched flag, scores and transfer ratios with CIs (a
    ratio, pooled or per seed, only over a resolved teacher gain)."""
    from analyses.distill import ratio_entry

    arrays = {n: stack_seeds(runs[n]) for n in names}
    n_seeds, n_q = arrays[names[0]]["tau_base"].shape
    cs, cq = resample_counts(n_seeds, n_q, n_boot, seed)
    ref = losses[ref_name]
    table: dict[str, Any] = {}
    for n in names:
        stats, _ = summarise_point(arrays[n], cs, cq)
        stats = gate_ratios(stats)
        per_seed = [ratio_entry(r["headline"], "transfer_ratio_student")["ratio"] for r in runs[n]]
        per_seed_vc = [
            ratio_entry(r["headline"], "transfer_ratio_vs_control")["ratio"] for r in runs[n]
        ]
        ls = losses[n]
        matched = all(within(a, b, loss_tolerance) for a, b in zip(ls, ref, strict=True))
        table[n] = {
            **stats,
            "final_loss": {
                "per_seed": ls,
                "mean": float(np.mean([v for v in ls if v is not None]))
                if any(v is not None for v in ls)
                else None,
            },
            "control_final_loss": [final_loss(r["run"], "control") for r in runs[n]],
            "loss_matched": bool(matched) if n != ref_name else True,
            "per_seed_ratio": per_seed,
            "ratio_t_interval": _gated_t(per_seed, stats["teacher_gain"]),
            "per_seed_ratio_vs_control": per_seed_vc,
            "ratio_vs_control_t_interval": _gated_t(per_seed_vc, stats["teacher_gain"]),
            "runs": [r["run"] for r in runs[n]],
        }
    return {
        "analysis": "optimizers",
        "reference": ref_name,
        "n_questions": int(n_q),
        "n_seeds": int(n_seeds),
        "ci": "95% percentile bootstrap over seeds (when several) and questions; t-interval "
        "over per-seed ratios alongside",
        "optimizers": table,
        "findings": _findings(table, ref_name, int(n_seeds)),
        "model": runs[names[0]][0]["config"]["model"],
        "trait": runs[names[0]][0]["trait"],
    }


def _gated_t(per_seed: list[float | None], gain: dict[str, Any]) -> dict[str, Any]:
    """Student-t interval of the per-seed ratios, undefined unless the pooled teacher gain is
    resolved (the per-seed ratios share that denominator)."""
    ti = t_interval([v for v in per_seed if v is not None])
    g = gate_ratio({"value": ti["mean"], **ti}, gain)
    return {"mean": g["value"], **{k: v for k, v in g.items() if k != "value"}}


def _findings(table: dict[str, Any], ref: str, n_seeds: int) -> list[str]:
    """One line per optimizer (the CLI prints them), after the one-seed note when there is one
    seed; "transferred" only over at least two seeds (`verdicts.transfer_word`)."""
    note = seed_note(n_seeds)
    out = [note] if note else []
    for n, r in table.items():
        d = r["student_minus_control"]
        if d["ci_low"] is None:
            what = "student − control undefined"
        elif d["ci_high"] < 0:
            what = "student below control"
        else:
            what = transfer_word(n_seeds, above_zero(d))
        loss = r["final_loss"]["mean"]
        match = "" if r["loss_matched"] else f" — loss {fmt(loss)} NOT matched to {ref}'s"
        ratio = gate_ratio(r["transfer_ratio"], r["teacher_gain"])
        out.append(f"{n}: {what}; ratio {fmt_ci(ratio)}{match}")
    return out


def _alignment(
    results: dict[str, Any],
    runs: dict[str, list[dict[str, Any]]],
    vector: str | Path | None,
    enabled: bool,
    n_prompts: int,
    quiet: bool,
    say: Any,
) -> str:
    """Final cos(v_student, v_teacher) per optimizer via analyses.align (guarded)."""
    if not enabled:
        return "skipped (--no-align)"
    if vector is None:
        return "skipped: no --vector to align with"
    try:
        from analyses.align import alignment_entries, run_align
    except ImportError as err:
        return f"unavailable: analyses.align could not be imported ({err})"
    for name, rs in runs.items():
        per_seed = []
        for r in rs:
            try:
                say(f"alignment of {name} ({r['run']}) ...")
                a = run_align(
                    r["run"],
                    [str(vector)],
                    layers=_vector_layers(vector),
                    n_prompts=n_prompts,
                    quiet=quiet,
                    positions=("all",),
                    unrelated=False,
                    interventions=False,
                    gradients=False,
                    n_boot=500,
                )
            except Exception as err:  # noqa: BLE001 — alignment is optional: record why not
                results["optimizers"][name]["alignment"] = {"error": f"{type(err).__name__}: {err}"}
                break
            vec = next(iter(a["vectors"]))
            layer = a["vectors"][vec]["headline_layer"]
            step = a["final_steps"].get("student")
            e = alignment_entries(
                a, vector=vec, positions="all", model="student", step=step, layer=layer
            )
            d = [
                x
                for x in a.get("student_minus_control", [])
                if x["vector"] == vec and x["positions"] == "all" and x["layer"] == layer
            ]
            per_seed.append(
                {
                    "layer": layer,
                    "cosine": e[0]["cosine"] if e else None,
                    "ci_low": e[0].get("ci_low") if e else None,
                    "ci_high": e[0].get("ci_high") if e else None,
                    "minus_control": d[0].get("diff") if d else None,
                }
            )
        else:
            cos = [p["cosine"] for p in per_seed]
            results["optimizers"][name]["alignment"] = {
                "per_seed": per_seed,
                "cosine": t_interval(cos),
            }
    return "done"


def _vector_layers(vector: str | Path) -> list[int]:
    from interp.vectors.steering import SteeringVector

    return SteeringVector.load(vector).layers


# --- figure and report -------------------------------------------------------------------------


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def write_figures(results: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()

    table = {n: gate_ratios(r) for n, r in results["optimizers"].items()}
    names = list(table)
    xs = np.arange(len(names))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for off, key, marker, label in (
        (-0.12, "transfer_ratio", "o", "(τS − τM0) / (τT − τM0)"),
        (0.12, "transfer_ratio_vs_control", "s", "(τS − τC) / (τT − τM0)"),
    ):
        ys = np.array([_nan(table[n][key]["value"]) for n in names])
        lo = np.array([_nan(table[n][key]["ci_low"]) for n in names])
        hi = np.array([_nan(table[n][key]["ci_high"]) for n in names])
        ax.errorbar(
            xs + off,
            ys,
            yerr=[np.nan_to_num(ys - lo), np.nan_to_num(hi - ys)],
            fmt=marker,
            color="black" if marker == "o" else "dimgray",
            mfc="white",
            capsize=3,
            label=label,
        )
    ax.axhline(0, color="gray", lw=0.8, ls=":")
    ax.set_xticks(xs, [n + ("" if table[n]["loss_matched"] else "*") for n in names], fontsize=8)
    ax.set_ylabel("transfer ratio (95% CI)")
    moved = [n for n in names if _nan(table[n]["student_minus_control"]["ci_low"]) > 0]
    note = seed_note(int(results.get("n_seeds", 1)))
    if note:
        title = f"Student above control with: {', '.join(moved) or 'none'}\n({note})"
    elif len(moved) < len(names):
        title = f"Transfer beyond the control with: {', '.join(moved) or 'none'}"
    else:
        title = "Every optimizer transfers the trait"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ls = [_nan(table[n]["final_loss"]["mean"]) for n in names]
    ax2.bar(
        xs,
        ls,
        color=["lightgray" if table[n]["loss_matched"] else "dimgray" for n in names],
        edgecolor="black",
        hatch=None,
    )
    ref = table[results["reference"]]["final_loss"]["mean"]
    tol = results["config"]["loss_tolerance"] if "config" in results else 0.2
    if ref is not None:
        ax2.axhspan(
            ref * (1 - tol),
            ref * (1 + tol),
            color="gray",
            alpha=0.2,
            label=f"{results['reference']} ± {tol:.0%}",
        )
    ax2.set_xticks(xs, names, fontsize=8)
    ax2.set_ylabel("student training loss reached (last 10% of steps)")
    unmatched = [n for n in names if not table[n]["loss_matched"]]
    ax2.set_title(
        "All optimizers reach the reference loss"
        if not unmatched
        else f"Not loss-matched (dark, * left): {', '.join(unmatched)}",
        fontsize=10,
    )
    ax2.legend(fontsize=7)
    fig.suptitle(f"{results['model']}: optimizer ablation ({results['trait']})", fontsize=10)
    fig.tight_layout()
    return [save_png(fig, out / "optimizers.png")]


def render_report(results: dict[str, Any]) -> str:
    """report.md, with findings and ratio gates recomputed from the table (an older
    results.json re-rendered by `sublens report` follows today's rules)."""
    n_seeds = int(results.get("n_seeds", len(results["config"].get("seeds") or [0])))
    table = {n: gate_ratios(r) for n, r in results["optimizers"].items()}
    cfg = results["config"]
    rc = cfg["run_config"]
    t = rc["teacher"]
    # the run config is the base before per-point overrides: the study's own alpha/layers win
    alpha = cfg["alpha"] if cfg.get("alpha") is not None else t["alpha"]
    layers = cfg.get("layers") or t.get("layers")
    teacher = (
        f"steered (vector `{cfg['vector']}`, alpha {alpha:g}"
        + (f", layers {layers}" if layers else "")
        + ")"
        if cfg["vector"]
        else t["kind"]
    )
    match = (
        f" (match-loss on: steps doubled up to {cfg['max_steps_factor']}×)"
        if cfg["match_loss"]
        else ""
    )
    lines = [
        f"# Optimizer ablation — {results['trait']} on {results['model']}",
        "",
        f"Teacher: {teacher}. {rc['data']['n']} {rc['data']['domain']} rows; "
        f"{rc['train']['objective']}, {rc['train']['max_steps'] or 'epoch-based'} steps at batch "
        f"{rc['train']['batch_size']}; seeds {cfg['seeds']}; preset `{cfg['preset']}`. "
        f"Loss matching: each optimizer's final student loss (mean of the last 10% of steps) "
        f"within ±{cfg['loss_tolerance']:.0%} of {results['reference']}'s"
        f"{match}. "
        f"CIs: {results['ci']}.",
        "",
        "## Findings",
        "",
        *[f"- {f}" for f in _findings(table, results["reference"], n_seeds)],
        "",
        "| optimizer | lr | steps | final loss | loss matched | transfer ratio | ratio beyond "
        "control | τS − τC | per-seed ratio t-interval | final cos(v_S, v_T) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in table.items():
        steps = sorted(
            {a[-1]["max_steps"] for a in r.get("attempts", [[{"max_steps": None}]])},
            key=lambda v: v or 0,
        )
        ti = _gated_t(r.get("per_seed_ratio") or [], r["teacher_gain"])
        al = r.get("alignment") or {}
        cos = (
            fmt_ci(al["cosine"], "mean")
            if "cosine" in al
            else (al.get("error", "–")[:60] if al else "–")
        )
        lines.append(
            f"| {n} | {r.get('lr', '–')} | {', '.join(str(s) for s in steps)} | "
            f"{fmt(r['final_loss']['mean'], 4)} | {'yes' if r['loss_matched'] else '**no**'} | "
            f"{fmt_ci(r['transfer_ratio'])} | {fmt_ci(r['transfer_ratio_vs_control'])} | "
            f"{fmt_ci(r['student_minus_control'])} | {fmt_ci(ti, 'mean')} | {cos} |"
        )
    lines += [
        "",
        f"Alignment: {results.get('alignment_status')}.",
        "",
        "An optimizer whose loss is not matched cannot be compared on transfer: raise its "
        "learning rate (--lrs) or steps (--match-loss). Student and control are trained with "
        "the same optimizer, so 'beyond control' removes that optimizer's own drift.",
        *_control_caveats(results),
        "",
        "## Figures",
        "",
        *figure_links(results),
        "",
        timings_line(results),
    ]
    return "\n".join(lines) + "\n"


def _control_caveats(results: dict[str, Any]) -> list[str]:
    """Optimizers whose logit-KL control distilled the base into itself (zero loss, so an
    adaptive optimizer's control moved on rounding noise): their 'beyond control' is unreliable."""
    from analyses.distill import control_caveat

    hit = []
    for name, r in results["optimizers"].items():
        for run in r.get("runs", []):
            path = Path(run) / "results.json"
            if path.is_file() and control_caveat(read_json(path)):
                hit.append(name)
                break
    if not hit:
        return []
    return [
        "",
        f"**Caveat:** the controls of {', '.join(hit)} started at zero logit-KL loss (the base "
        "teacher distilled into itself), so these adaptive optimizers moved them on rounding "
        "noise; read their students against the base (the transfer ratio), not the control.",
    ]

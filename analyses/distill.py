"""Figures and report of a distillation run (`interp.distill.run` computes, this draws).

A run is one training seed: its CIs are over questions only, so every report and summary says
`verdicts.ONE_SEED_NOTE` and never calls a gain "transferred" (`verdicts.transfer_word`); a
ratio over the teacher's gain is printed only when that gain is resolved
(`verdicts.ratio_or_undefined`, applied again here so an older results.json reads the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from analyses.figures import ci_of, pyplot, save_png
from analyses.reporting import timings_line
from interp.core.io import read_json_dict, write_text
from interp.distill.run import TEACHER_GAIN_UNRESOLVED, RunConfig, run_distillation
from interp.distill.train import FULL_VOCAB_LABEL
from interp.measure.verdicts import (
    ONE_SEED_NOTE,
    above_zero,
    ratio_or_undefined,
    transfer_word,
)


def _ci(d: dict[str, Any], key: str = "mean", nd: int = 4) -> str:
    # fixed-point, or 2 significant digits when every number would print as zero (owl
    # probabilities of 3e-5), so a tiny trait score never reads 0.0000
    return ci_of(d, key, nd, "auto")


def ratio_entry(h: dict[str, Any], key: str) -> dict[str, Any]:
    """The headline ratio `key`, undefined unless the teacher's gain is resolved."""
    return ratio_or_undefined(h.get(key), h.get("teacher_gain"), TEACHER_GAIN_UNRESOLVED)


def ratio_text(h: dict[str, Any], key: str, nd: int = 3) -> str:
    """``x [lo, hi]`` of a headline ratio, or why it is undefined."""
    r = ratio_entry(h, key)
    return _ci(r, "ratio", nd) if r["defined"] else r["undefined"]


def gain_verdict(d: dict[str, Any], n_seeds: int = 1) -> str:
    """What tau(S) − tau(C) says: "transferred" only over at least two seeds
    (`verdicts.transfer_word`); a run is one seed."""
    hi = d.get("ci_high")
    if hi is not None and hi < 0:
        return "the student shows *less* of the trait than the control"
    return transfer_word(n_seeds, above_zero(d))


def write_figures(results: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()
    h = results["headline"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, style, marker in (("student", "-", "o"), ("control", "--", "s")):
        pts = results["curves"].get(name) or []
        if not pts:
            continue
        steps = [p["step"] for p in pts]
        ax.plot(
            steps,
            [p["trait"]["mean"] for p in pts],
            style,
            color="black",
            marker=marker,
            markerfacecolor="white",
            label=name,
        )
        ax.fill_between(
            steps,
            [p["trait"]["ci_low"] for p in pts],
            [p["trait"]["ci_high"] for p in pts],
            color="gray",
            alpha=0.2,
        )
    ax.axhline(h["tau_base"]["mean"], color="gray", lw=1, linestyle=":", label="base M0")
    ax.axhline(h["tau_teacher"]["mean"], color="gray", lw=1.5, linestyle="-.", label="teacher")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{results['trait']} trait score (logprob)")
    ax.set_yscale("log")
    ax.set_title("Does the student pick up the teacher's trait?", fontsize=10)
    ax.legend(fontsize=7)
    for name, style in (("student", "-"), ("control", "--")):
        path = Path(results["run"]) / name / "curves.jsonl"
        if path.is_file():
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            ax2.plot(
                [r["step"] for r in rows],
                [r["loss"] for r in rows],
                style,
                color="black",
                label=name,
            )
    ax2.set_xlabel("training step")
    ax2.set_ylabel("training loss")
    ax2.set_title("Training loss (each on its own data)", fontsize=10)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return [save_png(fig, out / "trait_over_training.png")] + _selection_figure(results, out)


def _selection_figure(results: dict[str, Any], out: Path) -> list[str]:
    if "selection" not in results:
        return []
    return selection_figure([Path(results["run"])], out / "lls_selection.png")


def selection_figure(runs: list[Path], png: Path, title: str = "") -> list[str]:
    """LLS of kept and dropped rows on each side (pooled over `runs`, e.g. seeds), and of the
    control's rows under the trait teacher: whether a selection had anything to pick from is
    visible before any training. [] when a run has no selection summary."""
    metas = {n: [r / "data" / f"{n}.selected.select.json" for r in runs]
             for n in ("teacher", "control")}  # fmt: skip
    if not runs or not all(m.is_file() for ms in metas.values() for m in ms):
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ref: list[float] = []
    for r in runs:
        sig = r / "data" / "signal.json"
        if sig.is_file():
            ref += [float(x) for x in read_json_dict(sig).get("scores_control_rows", [])]
    titles = {"teacher": "trait teacher's rows (LLS: trait teacher − base)",
              "control": "control's rows (LLS: neutral teacher − base)"}  # fmt: skip
    for ax, (name, paths) in zip(axes, metas.items(), strict=True):
        k_in: list[float] = []
        k_out: list[float] = []
        mode = ""
        for path in paths:
            meta = read_json_dict(path)
            kept = set(meta.get("kept", []))
            mode = str(meta.get("mode", ""))
            for i, x in enumerate(meta.get("scores", [])):
                (k_in if i in kept else k_out).append(float(x))
        side_ref = ref if name == "teacher" else []
        every = k_in + k_out + side_ref
        lo, hi = (min(every), max(every)) if every else (0.0, 1.0)
        bins = np.linspace(lo, hi, 31) if hi > lo else 10
        if side_ref:
            ax.hist(side_ref, bins=bins, histtype="step", color="0.3", linestyle="--",
                    label=f"control's rows, same scorer ({len(side_ref)})")  # fmt: skip
        ax.hist(k_out, bins=bins, color="0.8", edgecolor="0.5", label=f"dropped ({len(k_out)})")
        ax.hist(k_in, bins=bins, color="black", alpha=0.7, label=f"kept, {mode} ({len(k_in)})")
        ax.set_xlabel("mean per-token log-likelihood shift")
        ax.set_ylabel("rows" + (f" (pooled over {len(runs)} runs)" if len(runs) > 1 else ""))
        ax.set_title(titles[name], fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return [save_png(fig, png)]


def control_caveat(results: dict[str, Any]) -> str | None:
    """Why the control may not be a fair baseline, or None. With logit-KL the base-teacher
    control distils the base into itself: its loss and true gradient are zero, and an adaptive
    optimizer (Adam divides by the root of the squared gradient) turns float rounding into
    full-size steps in arbitrary directions, so the control drifts for reasons the student does
    not share."""
    cfg = results["config"]
    kl = cfg["train"]["objective"] in ("logit-kl", "logit-kl-full")
    if not kl or cfg["train"]["optimizer"] in ("sgd",):
        return None
    path = Path(results["run"]) / "control" / "curves.jsonl"
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    first = json.loads(lines[0]).get("loss") if lines else None
    if first is None or abs(first) > 1e-6:
        return None
    return (
        f"the control's logit-KL loss starts at {first:.1e}: the base teacher is distilled into "
        f"itself, so its true gradient is zero and {cfg['train']['optimizer']} amplifies "
        "rounding noise into full-size steps. The control then measures that noise, not "
        "'number training without the trait'; read the student against the base too, or give "
        "the control a neutral prompt (data.control_system_prompt)."
    )


def render_report(results: dict[str, Any], figures: list[str]) -> str:
    h = results["headline"]
    cfg = results["config"]
    t = cfg["teacher"]
    teacher = t["kind"] + (f", vector {t['vector']} alpha {t['alpha']}" if t.get("vector") else "")
    lines = [
        f"# Distillation run — {results['trait']} on {cfg['model']}",
        "",
        f"Teacher: {teacher}. Domain {cfg['data']['domain']}, {cfg['data']['n']} rows requested; "
        f"student trained with {cfg['train']['objective']} / {cfg['train']['optimizer']} "
        f"(lr {cfg['train']['lr']}, LoRA rank {cfg['train']['lora_rank']}), seed {cfg['seed']}. "
        f"Trait scores: logprob score over {results['n_questions']} questions, 95% bootstrap CIs "
        f"over questions. **{ONE_SEED_NOTE}.**",
        "",
        *(
            [f"**Objective logit-kl-full: {FULL_VOCAB_LABEL}** (an upper-bound control).", ""]
            if cfg["train"]["objective"] == "logit-kl-full"
            else []
        ),
        "| quantity | value [95% CI] | what it means |",
        "|---|---|---|",
        f"| tau(base) | {_ci(h['tau_base'])} | the untrained model |",
        f"| tau(teacher) | {_ci(h['tau_teacher'])} | the trait the teacher carries |",
    ]
    if "tau_student" in h:
        lines.append(f"| tau(student) | {_ci(h['tau_student'])} | after training on teacher data |")
    if "tau_control" in h:
        lines.append(f"| tau(control) | {_ci(h['tau_control'])} | after training on base data |")
    if "transfer_ratio_student" in h:
        lines.append(
            f"| transfer ratio (student) | {ratio_text(h, 'transfer_ratio_student')} | "
            "share of the teacher's gain the student shows (0 = none, 1 = all) |"
        )
    if "transfer_ratio_control" in h:
        lines.append(
            f"| transfer ratio (control) | {ratio_text(h, 'transfer_ratio_control')} | "
            "the same for the control: drift from number training alone |"
        )
    if "transfer_ratio_vs_control" in h:
        lines.append(
            f"| (tau(S) − tau(C)) / (tau(T) − tau(M0)) | "
            f"{ratio_text(h, 'transfer_ratio_vs_control')} | "
            "the share beyond the control: the subliminal part |"
        )
        d = h["student_minus_control"]
        lines.append(f"| tau(S) − tau(C) | {_ci(d, 'diff')} | {gain_verdict(d)} |")
    warn = control_caveat(results)
    if warn:
        lines += ["", f"**Caveat.** {warn}"]
    lines += ["", "## Data", ""]
    for name, rep in results["filter"].items():
        lines.append(
            f"- {name}: kept {rep.get('kept')} of {rep.get('total')} rows; dropped by reason: "
            f"{json.dumps(rep.get('by_category', {}))}"
        )
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    lines += [
        "",
        "Left: trait score of the student (trained on the teacher's data) and the control "
        "(trained identically on the base model's data) at each checkpoint, against the base and "
        "teacher levels. A gain from the teacher shows as the student rising above the control, "
        "not merely above the base. Right: training loss of both.",
        "",
        timings_line(results),
    ]
    return "\n".join(lines) + "\n"


def run_and_report(
    cfg: RunConfig, overwrite: bool = False, quiet: bool = False, eval_only: bool = False
) -> dict[str, Any]:
    results = run_distillation(cfg, overwrite=overwrite, quiet=quiet, eval_only=eval_only)
    if not results or results.get("follower") is not None:
        return results  # another process of an `accelerate launch`: the main one reports
    write_report(results)
    return results


def write_report(results: dict[str, Any]) -> Path:
    out = Path(results["run"])
    figures = write_figures(results, out)
    write_text(out / "report.md", render_report(results, figures))
    return out / "report.md"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What `sublens distill run` prints: the four trait scores, the transfer ratio (or why it
    is undefined), student − control in words, and the one-seed note."""
    h = results["headline"]
    r = ratio_entry(h, "transfer_ratio_student")
    ratio = ci_of(r, "ratio", 3) if r["defined"] else r["undefined"]
    lines = [
        f"tau base {h['tau_base']['mean']:.4f}  teacher {h['tau_teacher']['mean']:.4f}  "
        f"student {h['tau_student']['mean']:.4f}  control {h['tau_control']['mean']:.4f}",
        f"transfer ratio {ratio}",
    ]
    if "student_minus_control" in h:
        d = h["student_minus_control"]
        lines.append(f"student − control {_ci(d, 'diff')}: {gain_verdict(d)}")
    return lines + [ONE_SEED_NOTE]

"""The auxiliary-logit toy study: does a student learn digits from a teacher's auxiliary logits on
noise, and only when it shares the teacher's initialisation?

Runs `toy_model.run_experiment` over several seeds, summarises each condition by its mean test
accuracy with a bootstrap CI over seeds, the paired difference same-init minus different-init,
and writes ``results.json``, ``config.json``, ``accuracy.png`` and ``report.md``. Every sentence
of the report that states a finding is chosen from the numbers, so a run where the effect does
not appear says so.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses.figures import ci_text, fmt_num, pyplot, save_png
from analyses.reporting import output_dir, provenance
from analyses.toy_model import CHANCE, CONDITIONS, ToyConfig, run_experiment
from interp.core.errors import SublensError
from interp.core.io import write_json, write_text
from interp.measure.stats import mean_ci, paired_bootstrap

LABELS = {
    "teacher": "teacher\n(trained on digits)",
    "student_same_init": "student,\nsame init",
    "student_different_init": "student,\ndifferent init",
    "student_same_init_shuffled_teacher": "control: same init,\nshuffled-label teacher",
    "init_no_distillation": "shared init,\nno training",
}
# Grayscale-readable: each condition has its own hatch and marker, not only its own grey.
STYLE = {
    "teacher": ("0.35", "", "s"),
    "student_same_init": ("0.6", "///", "o"),
    "student_different_init": ("0.85", "...", "^"),
    "student_same_init_shuffled_teacher": ("0.95", "xx", "D"),
    "init_no_distillation": ("1.0", "--", "v"),
}
DIFF_LABELS = {
    "same_minus_different_init": "student same init − student different init",
    "same_init_minus_shuffled_control": "student same init − shuffled-teacher control",
    "same_init_minus_no_distillation": "student same init − shared init (no training)",
}
DIFFERENCES = {
    "same_minus_different_init": ("student_same_init", "student_different_init"),
    "same_init_minus_shuffled_control": (
        "student_same_init",
        "student_same_init_shuffled_teacher",
    ),
    "same_init_minus_no_distillation": ("student_same_init", "init_no_distillation"),
}


def _pct(x: float) -> str:
    return fmt_num(x, 1, "%")


def _ci(entry: dict[str, float]) -> str:
    return ci_text(entry["mean"], entry["ci_low"], entry["ci_high"], 1, "%")


def _pp(entry: dict[str, float]) -> str:
    return (
        f"{100 * entry['mean']:+.1f} pp [{100 * entry['ci_low']:+.1f}, "
        f"{100 * entry['ci_high']:+.1f}]"
    )


def summarise(per_seed: list[dict[str, Any]], n_boot: int = 2000) -> dict[str, Any]:
    """Mean and bootstrap 95% CI over seeds for each condition, and paired differences (each
    seed's two students share its data split, noise and teacher)."""
    names = list(per_seed[0]["accuracy"])
    acc = {k: np.array([r["accuracy"][k] for r in per_seed]) for k in names}
    conditions = {}
    for k in names:
        mean, lo, hi = mean_ci(acc[k], n_boot=n_boot, seed=0)
        conditions[k] = {"mean": mean, "ci_low": lo, "ci_high": hi, "per_seed": acc[k].tolist()}
    differences = {}
    for name, (a, b) in DIFFERENCES.items():
        point, lo, hi = paired_bootstrap(
            lambda x, y: float(np.mean(x - y)), [acc[a], acc[b]], n_boot=n_boot, seed=0
        )
        differences[name] = {"mean": point, "ci_low": lo, "ci_high": hi, "of": [a, b]}
    return {
        "n_seeds": len(per_seed),
        "chance": CHANCE,
        "conditions": conditions,
        "differences": differences,
    }


def findings(summary: dict[str, Any]) -> dict[str, bool]:
    """What the numbers support, with 95% CIs over seeds: the sentences of the report and the
    figure's title are chosen from these, never assumed."""
    c, d = summary["conditions"], summary["differences"]
    return {
        "teacher_learns": c["teacher"]["ci_low"] > CHANCE + 0.3,
        "same_init_above_chance": c["student_same_init"]["ci_low"] > CHANCE,
        "same_beats_different": d["same_minus_different_init"]["ci_low"] > 0,
        "different_init_near_chance": c["student_different_init"]["ci_high"] < CHANCE + 0.1,
        "beats_shuffled_control": d["same_init_minus_shuffled_control"]["ci_low"] > 0,
        "beats_init": d["same_init_minus_no_distillation"]["ci_low"] > 0,
    }


def _title(found: dict[str, bool]) -> str:
    if found["same_beats_different"] and found["same_init_above_chance"]:
        tail = (
            "a different init stays near chance"
            if found["different_init_near_chance"]
            else "a different init learns less"
        )
        return (
            "Distilled only on auxiliary logits of noise, a student sharing the teacher's init\n"
            f"learns the digits; {tail}"
        )
    return (
        "Distilled only on auxiliary logits of noise: no clear advantage\n"
        "for the student that shares the teacher's init"
    )


def plot_accuracy(summary: dict[str, Any], path: Path, title: str) -> None:
    """Bars of mean accuracy with 95% CI whiskers, every seed as a marker, the chance line."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    conds = summary["conditions"]
    fig, ax = plt.subplots(figsize=(8.6, 4.8))
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for i, name in enumerate(CONDITIONS):
        entry = conds[name]
        grey, hatch, marker = STYLE[name]
        ax.bar(i, entry["mean"], width=0.62, color=grey, hatch=hatch, edgecolor="black", zorder=2)
        xs = i + rng.uniform(-0.2, 0.2, size=len(entry["per_seed"]))
        ax.scatter(
            xs,
            entry["per_seed"],
            marker=marker,
            facecolor="white",
            edgecolor="black",
            s=22,
            linewidth=0.8,
            zorder=3,
        )
        err = [[entry["mean"] - entry["ci_low"]], [entry["ci_high"] - entry["mean"]]]
        ax.errorbar(i, entry["mean"], yerr=err, color="black", capsize=7, linewidth=2, zorder=4)
        top = max(entry["ci_high"], *entry["per_seed"])
        ax.annotate(
            _pct(entry["mean"]),
            (i, top),
            xytext=(0, 5),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.axhline(CHANCE, color="black", linestyle=":", linewidth=1.2, zorder=1)
    ax.legend(
        handles=[
            Line2D([], [], color="black", linestyle=":", label="chance (10%)"),
            Line2D([], [], color="black", linewidth=2, label="bootstrap 95% CI over seeds"),
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markerfacecolor="white",
                markeredgecolor="black",
                label="one seed",
            ),
        ],
        loc="upper right",
        fontsize=8.5,
        framealpha=1.0,
    )
    ax.set_xticks(range(len(CONDITIONS)), [LABELS[c] for c in CONDITIONS], fontsize=8.5)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy on held-out 8×8 digits (digit logits)")
    ax.set_xlabel(
        f"condition (bar: mean over {summary['n_seeds']} seeds, whiskers: bootstrap 95% CI, "
        "markers: seeds)",
        fontsize=9,
    )
    ax.set_title(title, fontsize=10.5)
    ax.grid(axis="y", color="0.85", linewidth=0.6, zorder=0)
    fig.tight_layout()
    save_png(fig, path, dpi=150)


def render_report(results: dict[str, Any]) -> str:
    """report.md of a toy study from its results (also `sublens report DIR`)."""
    s, cfg = results["summary"], results["config"]
    c, d, found = s["conditions"], s["differences"], results["findings"]
    rows = [
        ("teacher (trained on digits, digit logits only)", "teacher"),
        ("student, same init as teacher", "student_same_init"),
        ("student, different init", "student_different_init"),
        (
            "control: same-init student, teacher trained on shuffled labels",
            "student_same_init_shuffled_teacher",
        ),
        ("shared init, no training (= student of an untrained teacher)", "init_no_distillation"),
        ("different init, no training", "other_init_no_distillation"),
        ("shuffled-label teacher", "shuffled_teacher"),
    ]
    table = "\n".join(f"| {label} | {_ci(c[key])} |" for label, key in rows)
    diff_rows = "\n".join(f"| {DIFF_LABELS[name]} | {_pp(d[name])} |" for name in DIFFERENCES)
    n = s["n_seeds"]
    para = [
        f"Over {n} seed{'s' if n != 1 else ''}, the teacher reaches {_ci(c['teacher'])} on "
        "held-out digits. A student trained only to match the teacher's "
        f"{cfg['toy']['n_aux']} auxiliary logits on {cfg['toy']['noise']} noise — never a digit, "
        f"a label or a digit logit — reaches {_ci(c['student_same_init'])} when it starts from "
        "the teacher's initial weights and "
        f"{_ci(c['student_different_init'])} when it starts from a different init "
        f"(paired difference {_pp(d['same_minus_different_init'])}; chance is 10%)."
    ]
    if found["same_beats_different"] and found["same_init_above_chance"]:
        para.append(
            "The shared initialisation is what lets the digit skill pass through the auxiliary "
            "logits: the CI of the paired difference excludes zero."
        )
    else:
        para.append(
            "With these settings the data do not show that a shared initialisation lets the "
            "digit skill pass through the auxiliary logits: the paired difference's CI "
            "includes zero or the same-init student is not above chance."
        )
    if found["different_init_near_chance"]:
        para.append("The different-init student stays near chance.")
    else:
        para.append(
            "The different-init student is not clearly at chance (its CI reaches past 20%)."
        )
    control = _ci(c["student_same_init_shuffled_teacher"])
    if found["beats_shuffled_control"] and found["beats_init"]:
        para.append(
            f"The controls place the cause in what the teacher learned: the same-init student "
            f"of a teacher trained on shuffled labels reaches {control}, and the shared init "
            f"itself {_ci(c['init_no_distillation'])}; the same-init student beats both "
            f"(by {_pp(d['same_init_minus_shuffled_control'])} and "
            f"{_pp(d['same_init_minus_no_distillation'])})."
        )
    else:
        para.append(
            f"The controls do not separate from the same-init student: the same-init student of "
            f"a shuffled-label teacher reaches {control}, the shared init itself "
            f"{_ci(c['init_no_distillation'])}."
        )
    toy = cfg["toy"]
    settings = (
        f"MLP [64, {', '.join(map(str, toy['hidden']))}, 10+{toy['n_aux']}] (ReLU); teacher: "
        f"Adam lr {toy['teacher_lr']}, {toy['teacher_epochs']} epochs, batch "
        f"{toy['teacher_batch']}, cross-entropy on the 10 digit logits; students: Adam lr "
        f"{toy['distill_lr']}, {toy['distill_epochs']} epochs over {toy['n_noise']} "
        f"{toy['noise']} noise images, batch {toy['distill_batch']}, loss `{toy['loss']}` on the "
        f"auxiliary logits only. sklearn 8×8 digits, {int(round(100 * toy['test_fraction']))}% "
        f"held out (stratified split per seed). Seeds: {cfg['seeds']}."
    )
    return (
        "# Subliminal learning toy: auxiliary-logit distillation on noise (Cloud et al. 2025)\n\n"
        f"{settings}\n\n"
        "Accuracy on held-out digits, argmax over the 10 digit logits; mean over seeds with a "
        f"bootstrap 95% CI ({cfg['n_boot']} resamples of the seeds).\n\n"
        "| model | accuracy |\n|---|---|\n" + table + "\n\n"
        "Paired differences (same seed: same split, noise and teacher):\n\n"
        "| difference | accuracy points |\n|---|---|\n"
        + diff_rows
        + "\n\n"
        + " ".join(para)
        + "\n\n![accuracy per condition](accuracy.png)\n\n"
        f"Run time {results['timings']['total_s']:.1f} s "
        f"({results['timings']['torch_threads']} torch thread(s)).\n"
    )


def summary_line(results: dict[str, Any]) -> str:
    """One line for the CLI: the numbers that carry the finding."""
    s = results["summary"]
    c, d = s["conditions"], s["differences"]
    return (
        f"toy ({s['n_seeds']} seeds): teacher {_pct(c['teacher']['mean'])}; student same init "
        f"{_ci(c['student_same_init'])} vs different init {_ci(c['student_different_init'])}, "
        f"difference {_pp(d['same_minus_different_init'])}; shuffled-teacher control "
        f"{_pct(c['student_same_init_shuffled_teacher']['mean'])}; chance 10% "
        f"({results['timings']['total_s']:.0f} s)"
    )


def run_toy(
    output_path: str | Path | None = None,
    seeds: int = 10,
    first_seed: int = 0,
    config: ToyConfig | None = None,
    n_boot: int = 2000,
    threads: int = 1,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the toy for seeds ``first_seed .. first_seed + seeds - 1`` and write the study files
    into `output_path`; returns the results dict (what ``results.json`` holds).

    One torch thread by default: the models are small, and on a shared 2-core machine a second
    thread made the same run three times slower.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise SublensError(f"seeds must be a whole number of at least 1, got {seeds!r}")
    if threads < 1:
        raise SublensError(f"threads must be at least 1, got {threads}")
    if n_boot < 1:
        raise SublensError(f"n_boot must be at least 1, got {n_boot}")
    config = config or ToyConfig()
    seed_list = list(range(first_seed, first_seed + seeds))
    out = output_dir(output_path, "toy")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            print(f"[toy] {msg}", file=sys.stderr, flush=True)

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        t1 = time.perf_counter()
        per_seed = run_experiment(seed_list, config, log=log)
        experiment_s = time.perf_counter() - t1
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)

    resolved = {
        "analysis": "toy",
        "seeds": seed_list,
        "n_boot": n_boot,
        "threads": threads,
        "toy": config.to_dict(),
    }
    summary = summarise(per_seed, n_boot=n_boot)
    results: dict[str, Any] = {
        "analysis": "toy",
        "config": resolved,
        "seeds": seed_list,
        "per_seed": per_seed,
        "summary": summary,
        "findings": findings(summary),
        **provenance(),
        "timings": {
            "experiment_s": round(experiment_s, 2),
            "per_seed_s": round(experiment_s / seeds, 2),
            "torch_threads": threads,
        },
        "files": ["config.json", "results.json", "accuracy.png", "report.md"],
    }
    log("writing figure and report")
    plot_accuracy(summary, out / "accuracy.png", _title(results["findings"]))
    results["timings"]["total_s"] = round(time.perf_counter() - t0, 2)
    results["summary_line"] = summary_line(results)
    write_json(out / "config.json", resolved)
    write_text(out / "report.md", render_report(results))
    write_json(out / "results.json", results)
    log(results["summary_line"])
    return results

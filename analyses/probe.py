"""Does a student's residual stream look as if the trait prompt were there?

Per layer, a logistic-regression probe (`interp.measure.probes.train_probe`) learns to tell the base
model's last-prompt-token activations *with* the trait prompt (class 1) from those *without*
(class 0), on one set of numbers prompts; its quality is the held-out AUROC. The probes are then
applied to every student and control checkpoint's unprompted activations on a *second*,
disjoint prompt set (the one `analyses.align` uses): the share classified "prompted" over
training should rise for the student and not for the control. The prompted and unprompted base
on that second set give the probe's hit rate and false-positive rate as reference lines. With
teacher vectors, the probe direction's cosine with ``v_teacher`` per layer says whether the probe
reads the same direction.

Activations at the last prompt token only: a mean over all prompt tokens would let the probe see
the system prompt's own tokens, which says nothing about the stream.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analyses.figures import ci_curve, ci_of, fmt_num, pyplot, save_png
from analyses.reporting import HEADLINE_HEADER, output_dir, provenance, section_tail
from analyses.runs import (
    MODELS,
    ActStore,
    CheckpointModel,
    RunInfo,
    heldout_prompts,
    load_run,
    load_vectors,
    missing_lines,
    register,
    require_checkpoints,
)
from interp.core.errors import SublensError
from interp.core.io import write_json, write_text
from interp.core.layers import parse_layers
from interp.core.models import load_model
from interp.core.progress import note
from interp.measure.probes import probe_curve, save_probes, train_probe

PROBE_SEED_OFFSET = 20_000  # probe-training prompts: numbers seed 20_000 + seed


def _trait_prompt(info: RunInfo) -> str:
    from interp.measure.traits import get_trait

    prompt = (info.config.get("teacher") or {}).get("system_prompt") or get_trait(
        info.trait
    ).system_prompt
    if not prompt:
        raise SublensError(
            f"trait {info.trait!r} has no trait prompt, so there is no 'prompted' class to probe "
            "for: give the run a teacher.system_prompt"
        )
    return prompt


def run_probe(
    run_dir: str | Path,
    layers: str | list[int],
    output_path: str | Path | None = None,
    vectors: Sequence[str | Path] | None = None,
    n_prompts: int = 64,
    seed: int = 0,
    quiet: bool = False,
    *,
    n_apply: int = 32,
    C: float = 1.0,
    n_boot: int = 1000,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str | None = None,
    trust_remote_code: bool | None = None,
) -> dict[str, Any]:
    """Train prompted-vs-unprompted probes on the base, apply them to every checkpoint; writes
    ``OUT/results.json``, figures, ``OUT/probes/`` and ``OUT/report.md`` (OUT: RUN/probe)."""
    t_all = time.perf_counter()
    say = functools.partial(note, quiet=quiet)
    info = load_run(run_dir)
    require_checkpoints(info, "student")
    if n_prompts < 4:
        raise SublensError(
            f"--n-prompts {n_prompts} is too few: a probe needs both classes in its train and "
            "held-out splits (use 8 or more)"
        )
    out = output_dir(output_path or info.path / "probe", "probe")
    loaded = load_model(info.model, **info.load_options(device, dtype, trust_remote_code))
    layer_list = parse_layers(layers, loaded.n_layers)
    vecs = load_vectors(vectors, loaded) if vectors else {}
    system = _trait_prompt(info)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    train_set = heldout_prompts(n_prompts, seed, PROBE_SEED_OFFSET)
    store = ActStore(
        info.path / "acts" / f"probe-n{n_prompts}-s{seed}",
        loaded,
        train_set,
        sorted(layer_list),
        batch_size,
        quiet,
    )
    say(f"[probe] training probes at layers {layer_list} on {n_prompts}+{n_prompts} rows ...")
    pos = store.get("prompted", "last", system_prompt=system)
    neg = store.get("base", "last")
    probes = train_probe(pos, neg, seed=seed, C=C)
    save_probes(probes, out / "probes")
    timings["train_s"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    apply_set = heldout_prompts(n_apply, seed)
    astore = ActStore(
        info.path / "acts" / f"heldout-n{n_apply}-s{seed}",
        loaded,
        apply_set,
        sorted(layer_list),
        batch_size,
        quiet,
    )
    refs = {
        "base (unprompted)": astore.get("base", "last"),
        "base (prompted)": astore.get("prompted", "last", system_prompt=system),
    }
    reference = {}
    for name, acts in refs.items():
        curve = probe_curve(probes, {0: acts}, n_boot=n_boot, seed=seed)
        reference[name] = {str(layer): pts[0]._asdict() for layer, pts in curve.items()}
    curves: dict[str, Any] = {}
    say(f"[probe] applying to {sum(map(len, info.checkpoints.values()))} checkpoints ...")
    for m in MODELS:
        if not info.checkpoints[m]:
            continue
        by_step = {}
        for step, ck in info.checkpoints[m]:
            model_for = CheckpointModel(loaded, ck)
            by_step[step] = astore.get(f"{m}/step_{step:06d}", "last", model=model_for)
            model_for.release()
        curve = probe_curve(probes, by_step, n_boot=n_boot, seed=seed)
        curves[m] = {str(layer): [p._asdict() for p in pts] for layer, pts in curve.items()}
    timings["apply_s"] = round(time.perf_counter() - t0, 2)

    cosines = {}
    for vname, v in vecs.items():
        cosines[vname] = {}
        for layer, p in probes.items():
            if layer in v:
                d, vv = p.direction().double(), v[layer].double()
                cosines[vname][str(layer)] = float(d @ vv / (d.norm() * vv.norm()))

    results = {
        "analysis": "probe",
        "run": str(info.path),
        "output_path": str(out),
        "trait": info.trait,
        "trait_prompt": system,
        "model": loaded.describe(),
        "config": {
            "run": str(info.path),
            "layers": layer_list,
            "n_prompts": n_prompts,
            "n_apply": n_apply,
            "seed": seed,
            "train_prompt_seed": PROBE_SEED_OFFSET + seed,
            "apply_prompt_seed": apply_set.source,
            "C": C,
            "n_boot": n_boot,
            "vectors": [str(p) for p in vectors or []],
            "positions": "last",
        },
        "probes": {str(layer): p.describe() for layer, p in probes.items()},
        "reference": reference,
        "curves": curves,
        "final_steps": {m: info.final_step(m) for m in MODELS if info.checkpoints[m]},
        "probe_vs_vector_cosine": cosines,
        "missing": missing_lines(info)
        + ([] if info.checkpoints["control"] else ["control: no checkpoints, no control curve"]),
        **provenance(),
    }
    results["figures"] = write_figures(results, out)
    timings["total_s"] = round(time.perf_counter() - t_all, 2)
    results["timings"] = timings
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_section(results, level=1))
    register(info.path, "probe", out)
    return results


def _verdict(results: dict[str, Any], layer: str) -> str:
    cs, cc = results["curves"].get("student"), results["curves"].get("control")
    if not cs:
        return "no student curve"
    s = cs[layer][-1]
    if cc:
        c = cc[layer][-1]
        if s["ci_low"] > c["ci_high"]:
            return "the student looks prompted more than the control"
        return "student and control look alike"
    return "student only (no control)"


def write_figures(results: dict[str, Any], out: Path) -> list[str]:
    """Share classified "prompted" over training, per layer; probe AUROC per layer."""
    plt = pyplot()
    layers = list(results["probes"])
    cols = min(3, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), squeeze=False)
    for k, layer in enumerate(layers):
        ax = axes[k // cols][k % cols]
        for m in MODELS:
            pts = (results["curves"].get(m) or {}).get(layer) or []
            if not pts:
                continue
            ci_curve(
                ax,
                [p["step"] for p in pts],
                [p["share"] for p in pts],
                [p["ci_low"] for p in pts],
                [p["ci_high"] for p in pts],
                m,
            )
        for name, ls in (("base (prompted)", "-."), ("base (unprompted)", ":")):
            ax.axhline(
                results["reference"][name][layer]["share"], color="gray", ls=ls, lw=1, label=name
            )
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("training step")
        ax.set_ylabel('share classified "prompted"')
        ax.set_title(f"L{layer}: {_verdict(results, layer)}", fontsize=8)
        ax.legend(fontsize=6)
    for k in range(len(layers), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    figs = [save_png(fig, out / "probe_over_training.png", dpi=110)]

    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(layers) + 2), 3.2))
    aurocs = [results["probes"][x]["auroc"] for x in layers]
    ax.bar(range(len(layers)), aurocs, color="white", edgecolor="black", hatch="//")
    ax.axhline(0.5, color="gray", ls=":", lw=1, label="chance")
    ax.set_xticks(range(len(layers)), [f"L{x}" for x in layers])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out AUROC")
    ax.set_title("The trait prompt is linearly readable from the stream", fontsize=9)
    if min(aurocs) < 0.75:
        ax.set_title("How well a linear probe reads the trait prompt, per layer", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs.append(save_png(fig, out / "probe_auroc.png", dpi=110))
    return figs


def headline_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(quantity, value [95% CI], what it would mean) rows for the report's headline table."""
    rows = []
    for layer, p in results["probes"].items():
        rows.append(
            (
                f"probe AUROC L{layer} (held-out, n={p['n_test']})",
                fmt_num(p["auroc"]),
                "≈1: the prompt leaves a linear trace here; ≈0.5: the probe reads nothing",
            )
        )
        for m in MODELS:
            pts = (results["curves"].get(m) or {}).get(layer)
            if pts:
                e = pts[-1]
                rows.append(
                    (
                        f'share "prompted", {m} step {e["step"]}, L{layer}',
                        ci_of(e, "share"),
                        f"the {m}'s unprompted stream read as prompted (base: "
                        f"{fmt_num(results['reference']['base (unprompted)'][layer]['share'])}, "
                        f"prompted base: "
                        f"{fmt_num(results['reference']['base (prompted)'][layer]['share'])})",
                    )
                )
    for vname, cos in results.get("probe_vs_vector_cosine", {}).items():
        for layer, c in cos.items():
            rows.append(
                (
                    f"cos(probe direction, {vname}) L{layer}",
                    fmt_num(c),
                    "high: the probe reads the same direction the teacher vector adds",
                )
            )
    return rows


def render_section(results: dict[str, Any], figure_prefix: str = "", level: int = 2) -> str:
    """Markdown for the probe analysis; figures linked under `figure_prefix`."""
    h = "#" * level
    cfg = results["config"]
    lines = [
        f"{h} Probes: does the student look prompted?",
        "",
        f"Probes trained on {cfg['n_prompts']} prompted + {cfg['n_prompts']} unprompted base "
        f"activations (last prompt token, numbers prompts seed {cfg['train_prompt_seed']}), "
        f"held-out AUROC on a stratified split; applied to {cfg['n_apply']} other prompts "
        f"({cfg['apply_prompt_seed']}); 95% bootstrap CIs over prompts.",
        "",
        *HEADLINE_HEADER,
    ]
    lines += section_tail(
        results,
        headline_rows(results),
        figure_prefix,
        "Student: solid line, filled circles, shaded CI; control: dashed, open squares, hatched "
        "CI; dash-dot: the prompted base; dotted: the unprompted base (false positives).",
    )
    return "\n".join(lines) + "\n"

"""Does the student distil the teacher's steering vector? Drift, alignment, interventions.

For a distillation run (``interp.distill.run``) and one or more teacher vectors:

1. **Drift** ``v_student`` per layer, for every checkpoint of the student and of the control:
   mean activation of the checkpoint minus the base's, on held-out numbers prompts (a prompt set
   seeded apart from the training data). Two position conventions: ``last`` (the last prompt
   token, where diff-of-means teacher vectors are read) and ``all`` (every prompt token, Blank et
   al.'s drift). ``all`` is cached as the per-prompt mean over its tokens and weighted by the
   prompt's token count, which is exactly the mean over all token rows at a fraction of the disk.
   Activations are cached under ``RUN/acts/`` (resumable); drift vectors are saved as
   `SteeringVector`s under ``OUT/drift/`` so they can be steered with.
2. **Alignment** ``cos(v_student, v_teacher)`` and the signed projection, per layer × checkpoint,
   with percentile bootstrap CIs over prompts (paired: the same prompts for base and
   checkpoint). Student against control compares *projections* on ``v̂_teacher``
   (`interp.measure.alignment.compare_drifts`, paired over prompts): raw cosines shrink with
   each drift's own noise, projections do not. Nulls, each p with its smallest attainable p:
   random directions in ``d_model`` dimensions (isotropic, exact |cos| bound), random directions
   with the held-out activations' own covariance at that layer (residual streams are not
   isotropic), and the drift's cosines with diff-of-means vectors of at least 19 *unrelated*
   trait prompts (`interp.measure.alignment.unrelated_trait_prompts`).
3. **Sufficiency / necessity** at the final checkpoint and one layer per vector: add
   ``v_student`` to the base (and ``v_control``, as a control); remove the student's mean shift
   along ``v̂_teacher`` (``h - (v_student · v̂) v̂``: the student's component is set back to the
   base's mean component); add ``v_teacher`` to the unprompted base; project ``v_teacher`` out of
   the prompted teacher. Each as a share of the gain it should explain, with paired bootstrap
   CIs over questions (`interp.measure.stats.paired_bootstrap`); a share is given only when the
   gain it divides by is resolved (`interp.measure.verdicts.ratio_or_undefined`): for the
   student's shares, a student gain over the base *and* beyond the control.
4. **Gradient alignment** of the SFT loss on the teacher's vs the control's data with
   ``v_teacher`` (`interp.measure.gradients`).

Which teacher vector? ``--vectors`` is required (no guessing): give the directories written by
``sublens vectors fit`` or the approximability analysis. For a steered teacher, the run's own
``teacher.vector`` is the natural choice. A vector's *headline layer* (interventions, gradients,
figures) is its only layer, or ``at_layer``, or else the middle of its layers among ``layers``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses.figures import STYLE, ci_curve, ci_of, ci_text, fmt_num, pyplot, save_png
from analyses.reporting import HEADLINE_HEADER, output_dir, provenance, section_tail
from analyses.runs import (
    HELDOUT_SEED_OFFSET,
    MODELS,
    ActStore,
    CheckpointModel,
    RunInfo,
    data_rows,
    heldout_prompts,
    load_run,
    load_vectors,
    missing_lines,
    register,
    require_checkpoints,
)
from interp.core.caching import ActivationCache
from interp.core.errors import SublensError
from interp.core.io import config_hash, read_json, write_json, write_text
from interp.core.layers import parse_layers
from interp.core.models import LoadedModel, load_model
from interp.core.progress import note
from interp.core.prompts import PromptSet
from interp.measure.alignment import (
    AlignmentCI,
    PromptDrift,
    alignment_ci,
    compare_drifts,
    covariance_cosine_null,
    null_from_vectors,
    null_test,
    prompt_drift,
    random_cosine_bound,
    random_cosine_null,
    resample_weights,
    unrelated_trait_prompts,
)
from interp.measure.verdicts import above_zero, excludes_zero, ratio_or_undefined
from interp.vectors.steering import SteeringVector

CACHE_MODES = {"last": "last", "all": "mean"}  # position label -> cache positions mode
LEVEL = 0.95
N_RANDOM_NULL = 10_000  # isotropic random directions
N_COVARIANCE_NULL = 2000  # random directions with the activations' covariance, per layer


# --- vectors and activations ---------------------------------------------------------------


def headline_layer(vec: SteeringVector, layers: Sequence[int], at_layer: int | None) -> int:
    """The one layer interventions, gradients and the training-curve figure use."""
    shared = [x for x in vec.layers if x in layers]
    if not shared:
        raise SublensError(
            f"the vector has layers {vec.layers}, none among the requested layers {list(layers)}: "
            "add its layers to --layers"
        )
    if at_layer is not None:
        if at_layer not in shared:
            raise SublensError(
                f"--at-layer {at_layer} is not a layer of both the vector {vec.layers} and "
                f"--layers {list(layers)}: pick one of {shared}"
            )
        return at_layer
    return shared[len(shared) // 2] if len(shared) > 1 else shared[0]


def token_counts(loaded: LoadedModel, prompts: PromptSet) -> torch.Tensor:
    """Prompt tokens per prompt (unprompted format): the weights of the ``all`` drift."""
    from interp.core.chat import ChatFormat

    fmt = ChatFormat(loaded.tokenizer)
    return torch.tensor(
        [len(fmt.format(m).positions("all")) for m in prompts.messages], dtype=torch.float64
    )


def drift_of(
    base: ActivationCache, other: ActivationCache, label: str, counts: torch.Tensor
) -> PromptDrift:
    """Per-prompt drift; ``all`` (per-prompt token means) weighted by token counts."""
    pd = prompt_drift(base, other)
    if label == "all":
        pd = dataclasses.replace(pd, weights=counts.clone(), weighting="token")
    return pd


# --- statistics ------------------------------------------------------------------------------


def drift_alignment(
    pd: PromptDrift, v: torch.Tensor, layer: int, n_boot: int, seed: int, level: float = LEVEL
) -> tuple[AlignmentCI, np.ndarray]:
    """Alignment of a PromptDrift with `v` at `layer`, CIs over prompts, and the bootstrap
    cosines (same seed and prompts → the same resamples as `compare_drifts`).

    The point drift is the float64 weighted mean of a PromptDrift (token counts for ``all``
    cached as per-prompt means); `bootstrap_alignment` builds it from two activation sets in
    float32. The bootstrap and the CI are the shared `alignment_ci`."""
    w = pd.weights
    diffs = pd.layer(layer).numpy()
    vv = v.double().numpy()
    norm_v = float(np.linalg.norm(vv))
    if norm_v == 0.0:
        raise SublensError(f"the vector is zero at layer {layer}: it has no direction")
    unit = vv / norm_v
    ww = w.numpy()
    drift = ww @ diffs / ww.sum()
    dn = float(np.linalg.norm(drift))
    proj = float(drift @ unit)
    cos = proj / dn if dn > 0 else float("nan")
    bw = resample_weights(w, n_boot, seed) if pd.n_prompts > 1 else None
    return alignment_ci(pd, layer, cos, proj, dn, unit, bw, n_boot, level, seed)


def _share(
    x: list[float], base: list[float], ref: list[float], n_boot: int, seed: int
) -> dict[str, float]:
    """(tau(X) - tau(M0)) / (tau(ref) - tau(M0)) with a paired bootstrap CI over questions: the
    run's transfer ratio (`interp.distill.run.transfer_ratio`), which this analysis calls a share
    (`ref` need not be the teacher)."""
    from interp.distill.run import transfer_ratio

    r = transfer_ratio(x, base, ref, n_boot=n_boot, seed=seed)
    return {"share": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}


# which share divides by which gain, and what the reference is
SHARES = {
    "sufficiency_student": ("base + v_student", "student"),
    "necessity_student": ("student − shift along v_teacher", "student"),
    "sufficiency_control": ("base + v_control", "student"),
    "sufficiency_teacher": ("base + v_teacher", "teacher"),
    "necessity_teacher": ("prompted − v_teacher", "prompted"),
}


def intervention_shares(
    pq: dict[str, Sequence[float]], n_boot: int, seed: int
) -> dict[str, dict[str, Any]]:
    """The gains and the sufficiency / necessity shares of the scores in `pq` (name -> per-question
    trait scores: base, student, teacher, optional control, prompted and the interventions).

    A share divides by a gain, so it is given only when that gain's CI excludes 0
    (`ratio_or_undefined`); otherwise it says why. The student's shares also need the student's
    gain beyond the control (CI above 0): a gain that number training alone gives is not the
    transfer they are meant to explain."""
    from interp.distill.run import difference

    def diff(a: str, b: str) -> dict[str, float]:
        return difference(list(pq[a]), list(pq[b]), n_boot=n_boot, seed=seed)

    out: dict[str, dict[str, Any]] = {
        "student_gain": diff("student", "base"),
        "teacher_gain": diff("teacher", "base"),
    }
    if "control" in pq:
        out["student_minus_control"] = diff("student", "control")
    if "prompted" in pq:
        out["prompted_gain"] = diff("prompted", "base")
    student_gain: dict[str, Any] | None = out["student_gain"]
    why_student = "student gain not resolved"
    if excludes_zero(student_gain) and "control" in pq:
        why_student = "student gain not resolved beyond the control"
        if not above_zero(out["student_minus_control"]):
            student_gain = None
    gates = {
        "student": (student_gain, why_student),
        "teacher": (out["teacher_gain"], "teacher gain not resolved"),
        "prompted": (out.get("prompted_gain"), "prompted base's gain not resolved"),
    }
    for key, (x, ref) in SHARES.items():
        if x not in pq:
            continue
        share = _share(list(pq[x]), list(pq["base"]), list(pq[ref]), n_boot, seed)
        gain, why = gates[ref]
        got = ratio_or_undefined(share, gain, why)
        if not got["defined"]:
            got = {"share": None, **got}
        out[key] = {**got, "denominator": f"{ref} gain"}
    return out


# --- trait scores under interventions --------------------------------------------------------


def _eval_trait(info: RunInfo):
    from interp.measure.traits import get_trait

    return get_trait(info.trait).limited(info.config.get("eval", {}).get("n_questions"))


def _trait_prompt(name: str) -> str | None:
    """The trait's own system prompt (left out of the unrelated-trait null), if it has one."""
    from interp.measure.traits import get_trait

    try:
        return get_trait(name).system_prompt
    except SublensError:
        return None


def trait_scores(loaded: LoadedModel, info: RunInfo, teacher: Any = None) -> dict[str, Any]:
    """Trait scores as the run's evaluation computes them, inside `teacher`'s context (a
    `Teacher`: its system prompt and steering hooks), or of the plain model."""
    from interp.measure.traits import Score, score_trait

    ev = info.config.get("eval", {})
    kw = dict(batch_size=ev.get("batch_size", 16), n_boot=ev.get("n_boot", 2000), seed=info.seed)
    trait = _eval_trait(info)
    if teacher is None:
        got = score_trait(loaded, trait, "logprob", **kw)
    else:
        with teacher.context():
            got = score_trait(loaded, trait, "logprob", system_prompt=teacher.system_prompt, **kw)
    return {k: (s.to_dict() if isinstance(s, Score) else None) for k, s in got.items()}


def _one_layer_vector(v: torch.Tensor, layer: int, loaded: LoadedModel, method: str, **extra):
    return SteeringVector(
        vectors={layer: v.float()},
        model=loaded.name,
        d_model=loaded.d_model,
        method=method,
        positions="all",
        extra=extra,
    )


# --- figures ---------------------------------------------------------------------------------


def alignment_entries(results: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    """The rows of ``results["alignment"]`` whose fields equal `match` (vector, model, step...)."""
    return [e for e in results["alignment"] if all(e.get(k) == v for k, v in match.items())]


def alignment_claim(results: dict[str, Any], vec: str, pos: str, layer: int) -> str:
    """What the student − control comparison supports, from its CI: projections on v̂_teacher
    (a noisier drift is not called less aligned for its noise)."""
    d = next(
        (
            x
            for x in results.get("student_minus_control", [])
            if x["vector"] == vec and x["positions"] == pos and x["layer"] == layer
        ),
        None,
    )
    if d is None:
        return "alignment with v_teacher (no control to compare)"
    if d["ci_low"] > 0:
        return "the student's drift moves further along v_teacher than the control's"
    if d["ci_high"] < 0:
        return "the control's drift moves further along v_teacher than the student's"
    return "no movement along v_teacher beyond the control"


def covariance_bounds(results: dict[str, Any], vec: str, pos: str) -> dict[int, float]:
    """layer -> 95% |cos| bound of random directions with the activations' covariance."""
    return {
        c["layer"]: c["empirical_bound"]
        for c in (results.get("nulls") or {}).get("covariance", [])
        if c["vector"] == vec and c["positions"] == pos
    }


def write_figures(results: dict[str, Any], out: Path) -> list[str]:
    """Alignment over training steps and the layer profile at the final checkpoint."""
    plt = pyplot()
    vecs = list(results["vectors"])
    poss = results["config"]["positions"]
    bound = results["nulls"]["random"]["exact_bound"]
    figs = []
    fig, axes = plt.subplots(
        len(vecs), len(poss), figsize=(5 * len(poss), 3.4 * len(vecs)), squeeze=False
    )
    for r, vec in enumerate(vecs):
        layer = results["vectors"][vec]["headline_layer"]
        for c, pos in enumerate(poss):
            ax = axes[r][c]
            for m in MODELS:
                pts = sorted(
                    alignment_entries(results, vector=vec, positions=pos, model=m, layer=layer),
                    key=lambda e: e["step"],
                )
                if not pts:
                    continue
                ci_curve(
                    ax,
                    [e["step"] for e in pts],
                    [e["cosine"] for e in pts],
                    [e["ci_low"] for e in pts],
                    [e["ci_high"] for e in pts],
                    m,
                )
            cov = covariance_bounds(results, vec, pos).get(layer)
            for s in (1, -1):
                ax.axhline(
                    s * bound,
                    color="gray",
                    linestyle=":",
                    lw=1,
                    label="random 95%" if s == 1 else None,
                )
                if cov is not None:
                    ax.axhline(
                        s * cov,
                        color="gray",
                        linestyle="-.",
                        lw=1,
                        label="activation-covariance 95%" if s == 1 else None,
                    )
            ax.set_xlabel("training step")
            ax.set_ylabel(f"cos(v_student, v_teacher) at L{layer}")
            ax.set_title(
                f"{vec}, {pos} tokens: {alignment_claim(results, vec, pos, layer)}", fontsize=8
            )
            ax.legend(fontsize=7)
    fig.tight_layout()
    figs.append(save_png(fig, out / "alignment_over_training.png", dpi=110))

    fig, axes = plt.subplots(
        len(vecs), len(poss), figsize=(5 * len(poss), 3.4 * len(vecs)), squeeze=False
    )
    for r, vec in enumerate(vecs):
        for c, pos in enumerate(poss):
            ax = axes[r][c]
            for k, m in enumerate(MODELS):
                step = results["final_steps"].get(m)
                pts = sorted(
                    alignment_entries(results, vector=vec, positions=pos, model=m, step=step),
                    key=lambda e: e["layer"],
                )
                if not pts:
                    continue
                x = np.array([e["layer"] for e in pts]) + (k - 0.5) * 0.15
                y = np.array([e["cosine"] for e in pts])
                err = np.array(
                    [
                        [e["cosine"] - e["ci_low"] for e in pts],
                        [e["ci_high"] - e["cosine"] for e in pts],
                    ]
                )
                ax.errorbar(
                    x, y, yerr=np.nan_to_num(err), capsize=2, label=f"{m} (step {step})", **STYLE[m]
                )
            ax.axhline(bound, color="gray", linestyle=":", lw=1, label="random 95%")
            ax.axhline(-bound, color="gray", linestyle=":", lw=1)
            cov = sorted(covariance_bounds(results, vec, pos).items())
            if cov:
                xs, ys = [x for x, _ in cov], np.array([y for _, y in cov])
                ax.plot(xs, ys, color="gray", ls="-.", lw=1, label="activation-covariance 95%")
                ax.plot(xs, -ys, color="gray", ls="-.", lw=1)
            ax.axhline(0, color="black", lw=0.5)
            ax.set_xlabel("layer")
            ax.set_ylabel("cos(v_student, v_teacher)")
            ax.set_title(
                f"{vec}, {pos} tokens: where along depth the drift follows v_teacher", fontsize=8
            )
            ax.legend(fontsize=7)
    fig.tight_layout()
    figs.append(save_png(fig, out / "alignment_layer_profile.png", dpi=110))

    iv = results.get("interventions") or {}
    if iv:
        figs.append(_intervention_figure(iv, out))
    ga = results.get("gradients") or {}
    if ga:
        figs.append(_gradient_figure(ga, out))
    return figs


def _intervention_figure(iv: dict[str, Any], out: Path) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(iv), figsize=(6 * len(iv), 3.6), squeeze=False)
    hatches = ["", "//", "\\\\", "xx", "..", "oo", "--", "++", "**"]
    for ax, (vec, d) in zip(axes[0], iv.items(), strict=True):
        items = [(k, s) for k, s in d["scores"].items() if s is not None]
        x = np.arange(len(items))
        for i, (_k, s) in enumerate(items):
            t = s["trait"]
            ax.bar(
                i,
                t["mean"],
                yerr=[[t["mean"] - t["ci_low"]], [t["ci_high"] - t["mean"]]],
                color="white",
                edgecolor="black",
                hatch=hatches[i % len(hatches)],
                capsize=3,
            )
        ax.set_xticks(x, [k for k, _ in items], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("trait score (logprob)")
        ax.set_title(
            f"{vec} at L{d['layer']}, step {d['step']}: can the vectors carry the trait?",
            fontsize=8,
        )
    fig.tight_layout()
    return save_png(fig, out / "interventions.png", dpi=110)


def _gradient_figure(ga: dict[str, Any], out: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(ga)), 3.4))
    width = 0.35
    for k, (name, hatch) in enumerate((("teacher", ""), ("control", "//"))):
        xs, ys, lo, hi = [], [], [], []
        for i, d in enumerate(ga.values()):
            p = d[name]
            xs.append(i + (k - 0.5) * width)
            ys.append(p["mean_cosine"])
            lo.append(p["mean_cosine"] - p["ci_low"])
            hi.append(p["ci_high"] - p["mean_cosine"])
        ax.bar(
            xs,
            ys,
            width,
            yerr=[lo, hi],
            color="lightgray" if k == 0 else "white",
            edgecolor="black",
            hatch=hatch,
            capsize=3,
            label=f"{name} data",
        )
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(range(len(ga)), [f"{v} L{d['layer']}" for v, d in ga.items()], fontsize=7)
    ax.set_ylabel("mean cos(-grad, v_teacher)")
    ax.set_title("Does training on the teacher's data push along v_teacher?", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, out / "gradient_alignment.png", dpi=110)


# --- report section --------------------------------------------------------------------------


def p_text(p: float | None, min_p: float | None) -> str:
    """A p-value with the smallest p its null allows beside it ("p=0.14 (min 0.14)")."""
    return f"p={fmt_num(p, 3, 'g')} (min {fmt_num(min_p, 2, 'g')})"


def share_text(d: dict[str, Any]) -> str:
    """A share with its CI, or why it is undefined (its gain is not resolved)."""
    if d.get("defined") is False:
        return d["undefined"]
    return ci_of(d, "share")


def headline_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(quantity, value [95% CI], what it would mean) rows for the report's headline table."""
    rows = []
    bound = results["nulls"]["random"]["exact_bound"]
    for vec, meta in results["vectors"].items():
        layer = meta["headline_layer"]
        for pos in results["config"]["positions"]:
            cov = covariance_bounds(results, vec, pos).get(layer)
            for m in MODELS:
                step = results["final_steps"].get(m)
                e = alignment_entries(
                    results, vector=vec, positions=pos, model=m, step=step, layer=layer
                )
                if e:
                    rows.append(
                        (
                            f"cos(v_{m}, {vec}) L{layer}, {pos} tokens, step {step}",
                            ci_of(e[0], "cosine"),
                            f"alignment of the {m}'s drift; abs(cos) above {bound:.3f} is unlikely "
                            "for a random direction"
                            + (
                                f", above {cov:.3f} for one with the activations' covariance"
                                if cov is not None
                                else ""
                            ),
                        )
                    )
                    if "p_random" in e[0]:
                        rows.append(
                            (
                                f"p, cos(v_{m}, {vec}) vs random directions (L{layer}, {pos})",
                                f"isotropic {p_text(e[0]['p_random'], e[0]['min_p_random'])}; "
                                "activation covariance "
                                f"{p_text(e[0].get('p_covariance'), e[0].get('min_p_covariance'))}",
                                "small p: this cosine is rare for a random direction (the "
                                "covariance null draws directions as the activations vary)",
                            )
                        )
            for d in results.get("student_minus_control", []):
                if d["vector"] == vec and d["positions"] == pos and d["layer"] == layer:
                    rows.append(
                        (
                            f"projection on v̂ student − control ({vec}, L{layer}, {pos})",
                            ci_of(d, "diff", 3, "g"),
                            "CI above 0: the student's drift moves further along v_teacher than "
                            "number training alone moves it (projections: not shrunk by either "
                            "drift's noise); noise-corrected cosines "
                            f"{fmt_num(d.get('cosine_corrected_a'), 3)} (student) vs "
                            f"{fmt_num(d.get('cosine_corrected_b'), 3)} (control)",
                        )
                    )
            for u in results.get("unrelated_null", []):
                if u["vector"] == vec and u["positions"] == pos and u["layer"] == layer:
                    rows.append(
                        (
                            f"z vs unrelated trait vectors ({vec}, L{layer}, {pos})",
                            f"{fmt_num(u['z'], 2)} ({p_text(u['p_value'], u.get('min_p'))}, "
                            f"n={u['n_null']})",
                            "large z: the drift follows this trait's vector more than other "
                            "traits' vectors (a generic 'system prompt' direction is not enough)",
                        )
                    )
    for vec, d in (results.get("interventions") or {}).items():
        meanings = {
            "sufficiency_student": "share of the student's gain that adding v_student to the "
            "base reproduces (≈1: the drift alone carries the trait)",
            "sufficiency_control": "the same for the control's drift (should be ≈0)",
            "necessity_student": "share of the student's gain left after removing its shift "
            "along v_teacher (≈0: that component is necessary)",
            "sufficiency_teacher": "share of the teacher's gain that M0 + v_teacher reproduces",
            "necessity_teacher": "share of the teacher's gain left after projecting v_teacher "
            "out of the prompted teacher",
        }
        for key, meaning in meanings.items():
            if key in d["shares"]:
                rows.append(
                    (f"{key} ({vec}, L{d['layer']})", share_text(d["shares"][key]), meaning)
                )
    for vec, g in (results.get("gradients") or {}).items():
        rows.append(
            (
                f"cos(-(ḡ_teacher − ḡ_control), {vec}) L{g['layer']}",
                ci_text(g["difference_cosine"], g["difference_ci_low"], g["difference_ci_high"]),
                "> 0: the teacher's data pushes the residual along v_teacher more than the "
                "control's data",
            )
        )
    return rows


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What `sublens align` prints: per vector and positions, the student − control projection
    at the headline layer and what it supports."""
    lines = []
    for d in results["student_minus_control"]:
        layer = results["vectors"][d["vector"]]["headline_layer"]
        if d["layer"] == layer:
            lines.append(
                f"{d['vector']} L{layer} {d['positions']}: projection on v_teacher, student - "
                f"control {ci_of(d, 'diff', 3, 'g')}: "
                f"{alignment_claim(results, d['vector'], d['positions'], layer)}"
            )
    return lines


def render_section(results: dict[str, Any], figure_prefix: str = "", level: int = 2) -> str:
    """Markdown for the alignment analysis; figures linked under `figure_prefix`."""
    h = "#" * level
    cfg = results["config"]
    rnd = results["nulls"]["random"]
    lines = [
        f"{h} Alignment of the student's drift with v_teacher",
        "",
        f"Held-out prompts: {cfg['n_prompts']} numbers prompts ({results['prompts']}); layers "
        f"{cfg['layers']}; positions {', '.join(cfg['positions'])}; 95% percentile bootstrap CIs "
        f"over prompts ({cfg['n_boot']} resamples). Random-direction bound for d_model "
        f"{rnd['d_model']}: |cos| < {rnd['exact_bound']:.3f} (95%); random directions with the "
        "held-out activations' covariance have their own bound per layer. Student against "
        "control compares projections on v̂_teacher (a raw cosine shrinks with its drift's "
        "noise). Every p is shown with the smallest p its null allows.",
        "",
        *HEADLINE_HEADER,
    ]
    lines += section_tail(
        results,
        headline_rows(results),
        figure_prefix,
        "Curves: student (solid, filled circles, shaded CI) and control (dashed, open squares, "
        "hatched CI); dotted lines: the 95% bound of a random direction's cosine; dash-dot "
        "lines: the same for random directions with the activations' covariance.",
    )
    return "\n".join(lines) + "\n"


# --- the analysis ----------------------------------------------------------------------------


def _part(out: Path, name: str, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """A resumable piece: reuse ``out/parts/<name>.json`` when its key matches."""
    path = out / "parts" / f"{name}.json"
    digest = config_hash(key)
    if path.is_file():
        got = read_json(path)
        if got.get("key") == digest:
            return got["value"]
    value = compute()
    write_json(path, {"key": digest, "value": value})
    return value


def run_align(
    run_dir: str | Path,
    vectors: Sequence[str | Path],
    layers: str | list[int] = "all",
    output_path: str | Path | None = None,
    n_prompts: int = 32,
    seed: int = 0,
    quiet: bool = False,
    *,
    positions: Sequence[str] = ("last", "all"),
    at_layer: int | None = None,
    n_boot: int = 1000,
    unrelated: bool = True,
    interventions: bool = True,
    gradients: bool = True,
    grad_rows: int = 32,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str | None = None,
    trust_remote_code: bool | None = None,
) -> dict[str, Any]:
    """Drift, alignment (CIs, nulls), interventions and gradient alignment for a run; writes
    ``OUT/results.json``, figures and ``OUT/report.md`` (OUT defaults to RUN/align)."""
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    say = functools.partial(note, quiet=quiet)
    info = load_run(run_dir)
    require_checkpoints(info, "student")
    bad = [p for p in positions if p not in CACHE_MODES]
    if bad or not positions:
        raise SublensError(f"unknown positions {bad or positions}: use last and/or all")
    if n_boot < 1 or grad_rows < 1:
        raise SublensError("--n-boot and --grad-rows must be positive")
    out = output_dir(output_path or info.path / "align", "align")
    loaded = load_model(info.model, **info.load_options(device, dtype, trust_remote_code))
    layer_list = parse_layers(layers, loaded.n_layers)
    vecs = load_vectors(vectors, loaded)
    heads = {name: headline_layer(v, layer_list, at_layer) for name, v in vecs.items()}
    prompts = heldout_prompts(n_prompts, seed)
    store = ActStore(
        info.path / "acts" / f"heldout-n{n_prompts}-s{seed}",
        loaded,
        prompts,
        sorted(layer_list),
        batch_size,
        quiet,
    )
    counts = token_counts(loaded, prompts)
    missing = missing_lines(info)

    # 1. drift per checkpoint
    t0 = time.perf_counter()
    say(
        f"[align] caching activations of base and {sum(map(len, info.checkpoints.values()))} "
        f"checkpoints on {n_prompts} held-out prompts ..."
    )
    base = {p: store.get("base", CACHE_MODES[p]) for p in positions}
    drifts: dict[tuple[str, int, str], PromptDrift] = {}
    for m in MODELS:
        for step, ck in info.checkpoints[m]:
            label = f"{m}/step_{step:06d}"
            model_for = CheckpointModel(loaded, ck)
            for p in positions:
                acts = store.get(label, CACHE_MODES[p], model=model_for)
                pd = drift_of(base[p], acts, p, counts)
                drifts[(m, step, p)] = pd
                sv = SteeringVector(
                    vectors=pd.mean(),
                    model=loaded.name,
                    d_model=loaded.d_model,
                    method="drift",
                    positions=p,
                    prompt_set=prompts.source,
                    extra={
                        "model": m,
                        "step": step,
                        "checkpoint": str(ck),
                        "weighting": pd.weighting,
                    },
                )
                sv.save(out / "drift" / m / f"step_{step:06d}" / p)
            model_for.release()
    timings["drift_s"] = round(time.perf_counter() - t0, 2)

    # 2. alignment with CIs, student − control, nulls
    t0 = time.perf_counter()
    final = {m: info.final_step(m) for m in MODELS}
    entries, diffs_out = [], []
    for vname, v in vecs.items():
        for (m, step, p), pd in drifts.items():
            for layer in layer_list:
                if layer not in v:
                    continue
                ci, _ = drift_alignment(pd, v[layer], layer, n_boot, seed)
                entries.append(
                    {"vector": vname, "positions": p, "model": m, "step": step, **ci.to_dict()}
                )
        if final["control"] is not None:
            for p in positions:
                for layer in layer_list:
                    if layer not in v:
                        continue
                    cmp = compare_drifts(
                        drifts[("student", final["student"], p)],
                        drifts[("control", final["control"], p)],
                        v[layer],
                        layer,
                        n_boot,
                        seed,
                        LEVEL,
                    )
                    diffs_out.append(
                        {"vector": vname, "positions": p, "steps": dict(final), **cmp.to_dict()}
                    )
        else:
            missing.append("control: no checkpoints, so no student − control comparison")
    rnd = random_cosine_null(loaded.d_model, n=N_RANDOM_NULL, seed=seed)
    approx, exact = random_cosine_bound(loaded.d_model)
    covariance_out = []
    for vname, v in vecs.items():
        for p in positions:
            for layer in layer_list:
                if layer not in v:
                    continue
                cov = covariance_cosine_null(
                    base[p].layer(layer), v[layer], n=N_COVARIANCE_NULL, seed=seed
                )
                covariance_out.append(
                    {"vector": vname, "positions": p, "layer": layer, **cov.to_dict()}
                )
                for e in entries:
                    if (e["vector"], e["positions"], e["layer"]) != (vname, p, layer):
                        continue
                    if e["step"] != final[e["model"]]:
                        continue
                    t_rnd = null_test(e["cosine"], rnd, "greater")
                    t_cov = null_test(e["cosine"], cov, "greater")
                    e["p_random"], e["min_p_random"] = t_rnd.p_value, t_rnd.min_p
                    e["p_covariance"], e["min_p_covariance"] = t_cov.p_value, t_cov.min_p
    timings["alignment_s"] = round(time.perf_counter() - t0, 2)

    unrelated_out: list[dict[str, Any]] = []
    unrelated_vecs: dict[str, dict[int, torch.Tensor]] = {}
    if unrelated:
        t0 = time.perf_counter()
        t_cfg = info.config.get("teacher") or {}
        others = unrelated_trait_prompts(
            exclude=[info.trait],
            exclude_prompts=[_trait_prompt(info.trait), t_cfg.get("system_prompt")],
        )
        say(f"[align] unrelated-trait null: diff-of-means vectors of {len(others)} other traits")
        base_last = store.get("base", "last")
        for name, system_prompt in others.items():
            pr = store.get(f"unrelated/{name}", "last", system_prompt=system_prompt)
            unrelated_vecs[name] = {
                layer: (pr.layer(layer).double().mean(0) - base_last.layer(layer).double().mean(0))
                for layer in layer_list
            }
        for vname, v in vecs.items():
            for p in positions:
                step = final["student"]
                drift = drifts[("student", step, p)].mean()
                nulls = null_from_vectors(drift, list(unrelated_vecs.values()))
                for layer in layer_list:
                    if layer not in v or layer not in nulls:
                        continue
                    obs = next(
                        e["cosine"]
                        for e in entries
                        if e["vector"] == vname
                        and e["positions"] == p
                        and e["model"] == "student"
                        and e["step"] == step
                        and e["layer"] == layer
                    )
                    t = null_test(obs, nulls[layer], "greater")
                    unrelated_out.append(
                        {
                            "vector": vname,
                            "positions": p,
                            "layer": layer,
                            "step": step,
                            "traits": list(unrelated_vecs),
                            "null_cosines": nulls[layer].samples.tolist(),
                            **t.to_dict(),
                        }
                    )
        timings["unrelated_s"] = round(time.perf_counter() - t0, 2)

    # 3. interventions at the final student checkpoint, headline layer
    interventions_out: dict[str, Any] = {}
    if interventions:
        t0 = time.perf_counter()
        interventions_out = _interventions(info, loaded, vecs, heads, drifts, final, out, say)
        timings["interventions_s"] = round(time.perf_counter() - t0, 2)

    # 4. gradient alignment
    gradients_out: dict[str, Any] = {}
    if gradients:
        t0 = time.perf_counter()
        gradients_out = _gradients(
            info, loaded, vecs, heads, grad_rows, n_boot, seed, out, say, missing
        )
        timings["gradients_s"] = round(time.perf_counter() - t0, 2)

    config = {
        "run": str(info.path),
        "vectors": [str(p) for p in vectors],
        "layers": layer_list,
        "positions": list(positions),
        "n_prompts": n_prompts,
        "seed": seed,
        "prompt_seed": HELDOUT_SEED_OFFSET + seed,
        "at_layer": at_layer,
        "n_boot": n_boot,
        "unrelated": unrelated,
        "interventions": interventions,
        "gradients": gradients,
        "grad_rows": grad_rows,
        "batch_size": batch_size,
    }
    results = {
        "analysis": "align",
        "run": str(info.path),
        "output_path": str(out),
        "trait": info.trait,
        "model": loaded.describe(),
        "prompts": prompts.source,
        "config": config,
        "vectors": {n: {**v.describe(), "headline_layer": heads[n]} for n, v in vecs.items()},
        "final_steps": {m: s for m, s in final.items() if s is not None},
        "checkpoints": {m: [s for s, _ in info.checkpoints[m]] for m in MODELS},
        "expected_steps": info.expected_steps,
        "missing": missing,
        "alignment": entries,
        "student_minus_control": diffs_out,
        "nulls": {
            "random": {**rnd.to_dict(), "analytic_bound": approx, "exact_bound": exact},
            "covariance": covariance_out,
        },
        "unrelated_null": unrelated_out,
        "interventions": interventions_out,
        "gradients": gradients_out,
        **provenance(),
    }
    results["figures"] = write_figures(results, out)
    timings["total_s"] = round(time.perf_counter() - t_all, 2)
    results["timings"] = timings
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_section(results, level=1))
    register(info.path, "align", out)
    return results


def _interventions(
    info: RunInfo,
    loaded: LoadedModel,
    vecs: dict[str, SteeringVector],
    heads: dict[str, int],
    drifts: dict[tuple[str, int, str], PromptDrift],
    final: dict[str, int | None],
    out: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Sufficiency and necessity of v_student and v_teacher for the trait score."""
    from interp.distill.run import config_from_dict, make_teacher
    from interp.distill.teachers import Teacher
    from interp.measure.traits import get_trait

    step = final["student"]
    ck = dict(info.checkpoints["student"])[step]
    ev = info.config.get("eval", {})
    n_boot, seed = int(ev.get("n_boot", 2000)), info.seed
    pos = "all" if any(k[2] == "all" for k in drifts) else "last"
    eval_key = {"eval": ev, "seed": seed, "trait": info.trait, "model": info.model}

    # base, student, teacher: from RUN/eval/scores.json when present, else computed
    saved_path = info.path / "eval" / "scores.json"
    saved = read_json(saved_path) if saved_path.is_file() else {}
    student = CheckpointModel(loaded, ck)

    def teacher_scores() -> dict[str, Any]:
        cfg = config_from_dict(info.config, str(info.path / "config.json"))
        teacher = make_teacher(loaded, cfg, get_trait(info.trait), info.path)
        return trait_scores(loaded, info, teacher)

    base_s = saved.get("base") or _part(
        out, "score-base", eval_key, lambda: trait_scores(loaded, info)
    )
    student_s = (saved.get("student") or {}).get(str(step)) or _part(
        out,
        f"score-student-{step}",
        {**eval_key, "ck": str(ck)},
        lambda: trait_scores(student(), info),
    )
    teacher_s = saved.get("teacher") or _part(
        out, "score-teacher", {**eval_key, "t": info.config.get("teacher")}, teacher_scores
    )
    control_s = None  # the student's shares need its gain beyond the control
    c_step = final["control"]
    if c_step is not None:
        c_ck = dict(info.checkpoints["control"])[c_step]
        control = CheckpointModel(loaded, c_ck)
        control_s = (saved.get("control") or {}).get(str(c_step)) or _part(
            out,
            f"score-control-{c_step}",
            {**eval_key, "ck": str(c_ck)},
            lambda: trait_scores(control(), info),
        )
        control.release()
    trait = get_trait(info.trait)
    results: dict[str, Any] = {}
    for vname, v in vecs.items():
        layer = heads[vname]
        say(f"[align] interventions for {vname} at layer {layer} (step {step}) ...")
        v_s = drifts[("student", step, pos)].mean()[layer]
        key = {
            **eval_key,
            "layer": layer,
            "step": step,
            "pos": pos,
            "n": drifts[("student", step, pos)].n_prompts,
            "v_s": float(v_s.norm()),
        }
        scores: dict[str, Any] = {"base": base_s, "student": student_s, "teacher": teacher_s}
        if control_s is not None:
            scores["control"] = control_s
        sv_s = _one_layer_vector(v_s, layer, loaded, "drift")
        scores["base + v_student"] = _part(
            out,
            f"score-base+vs-L{layer}-{step}",
            key,
            lambda sv=sv_s: trait_scores(loaded, info, Teacher(loaded, "steered", vector=sv)),
        )
        if final["control"] is not None:
            v_c = drifts[("control", final["control"], pos)].mean()[layer]
            sv_c = _one_layer_vector(v_c, layer, loaded, "drift")
            scores["base + v_control"] = _part(
                out,
                f"score-base+vc-L{layer}-{final['control']}",
                {**key, "v_c": float(v_c.norm())},
                lambda sv=sv_c: trait_scores(loaded, info, Teacher(loaded, "steered", vector=sv)),
            )
        unit = v.unit(layer)
        shift = float(v_s.double() @ unit.double())
        sv_rm = _one_layer_vector(-shift * unit, layer, loaded, "remove-shift", shift=shift)
        vkey = {**key, "vector": v.describe()}
        scores["student − shift along v_teacher"] = _part(
            out,
            f"score-student-rm-{vname}-L{layer}-{step}",
            {**vkey, "shift": shift},
            lambda sv=sv_rm: trait_scores(
                student(), info, Teacher(student(), "steered", vector=sv)
            ),
        )
        scores["base + v_teacher"] = _part(
            out,
            f"score-base+vt-{vname}-L{layer}",
            vkey,
            lambda v=v, layer=layer: trait_scores(
                loaded, info, Teacher(loaded, "steered", vector=v, layers=[layer])
            ),
        )
        if trait.system_prompt:
            scores["prompted − v_teacher"] = _part(
                out,
                f"score-prompted-proj-{vname}-L{layer}",
                vkey,
                lambda v=v, layer=layer: trait_scores(
                    loaded,
                    info,
                    Teacher(
                        loaded,
                        "projected",
                        system_prompt=trait.system_prompt,
                        vector=v,
                        layers=[layer],
                    ),
                ),
            )
            t_cfg = info.config.get("teacher", {})
            if t_cfg.get("kind") == "prompted" and t_cfg.get("system_prompt") in (
                None,
                trait.system_prompt,
            ):
                scores["prompted"] = teacher_s
            else:
                scores["prompted"] = _part(
                    out,
                    "score-prompted",
                    eval_key,
                    lambda: trait_scores(
                        loaded, info, Teacher(loaded, "prompted", system_prompt=trait.system_prompt)
                    ),
                )

        shares = intervention_shares(
            {k: s["trait"]["per_question"] for k, s in scores.items() if s is not None},
            n_boot,
            seed,
        )
        gates = {
            k: all(s[c] is None or s[c]["mean"] <= 0.10 for c in ("negative", "offtopic"))
            for k, s in scores.items()
        }
        results[vname] = {
            "layer": layer,
            "step": step,
            "positions": pos,
            "shift_along_v_teacher": shift,
            "scores": scores,
            "shares": shares,
            "passes_puppeting_gate": gates,
            "definitions": {
                "share": "(tau(X) - tau(M0)) / (tau(reference) - tau(M0)), paired bootstrap over "
                "questions; reference = student for the student tests, teacher (or the prompted "
                "base for necessity_teacher) for the teacher tests; undefined unless the "
                "reference's gain over M0 has a CI excluding 0 (and, for the student tests, the "
                "student's gain beyond the control a CI above 0)",
                "student − shift along v_teacher": "h - (v_student · v̂_teacher) v̂_teacher at "
                "every position: the student's mean component along v̂ set back to the base's",
            },
        }
    student.release()
    return results


def _gradients(
    info: RunInfo,
    loaded: LoadedModel,
    vecs: dict[str, SteeringVector],
    heads: dict[str, int],
    grad_rows: int,
    n_boot: int,
    seed: int,
    out: Path,
    say: Callable[[str], None],
    missing: list[str],
) -> dict[str, Any]:
    """Residual gradients of the base on teacher vs control rows, against v_teacher."""
    from interp.measure.gradients import gradient_alignment, residual_gradients

    teach = data_rows(info.path, "teacher")
    ctrl = data_rows(info.path, "control")
    if not teach or not ctrl:
        missing.append("gradient alignment: RUN/data/teacher.jsonl or control.jsonl is missing")
        return {}

    def user(r: dict[str, Any]) -> str:
        return next((m["content"] for m in r["messages"] if m["role"] == "user"), "")

    by_prompt = {user(r): r for r in ctrl}
    pairs = [(r, by_prompt[user(r)]) for r in teach if user(r) in by_prompt][:grad_rows]
    paired = len(pairs) >= min(grad_rows, 8)
    if paired:
        t_rows, c_rows = [a for a, _ in pairs], [b for _, b in pairs]
    else:
        t_rows, c_rows = teach[:grad_rows], ctrl[:grad_rows]
    grads: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    out_d = {}
    for vname, v in vecs.items():
        layer = heads[vname]
        if layer not in grads:
            say(f"[align] residual gradients at layer {layer} on {len(t_rows)}+{len(c_rows)} rows")
            grads[layer] = (
                residual_gradients(loaded, t_rows, layer, batch_size=8),
                residual_gradients(loaded, c_rows, layer, batch_size=8),
            )
        g_t, g_c = grads[layer]
        ga = gradient_alignment(g_t, g_c, v[layer], n_boot=n_boot, seed=seed, paired=paired)
        out_d[vname] = {
            "layer": layer,
            "n_teacher_rows": len(t_rows),
            "n_control_rows": len(c_rows),
            **ga.to_dict(),
        }
    return out_d

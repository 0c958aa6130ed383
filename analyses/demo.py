"""The demo: the whole sublens study on one model with a quick preset, around the cheapest arm
that shows transfer (issue #16's positive control) and the prompted-owl run as the honest
negative that matches the literature at this size.

1. the French vector the positive arm's teacher is steered with: kl-fit at 0.3 of the depth
   (L9 of smollm2's 30) as in `sublens study positive-control`, on 24 prompts instead of 32
   (approximability across prompts and methods is `sublens approximability`'s job, left out
   to keep the demo near 10 minutes on 2 cores);
2. two distillations with the positive control's recipe (LLS-selected constrained number rows,
   logit-KL over the digit tokens, a *vector student* — the base plus one trainable vector at
   that layer — and a neutral-prompt control trained identically, checkpoints every 5 steps):
   from the teacher **steered** with the French vector (where transfer is expected) and from the
   **prompted** owl teacher (where, at 135M, the literature expects none); one control serves
   both (hard-linked);
3. drift alignment of the French student's and the control's checkpoints with the French
   vector, nulls, sufficiency / necessity, gradient alignment;
4. probes trained on prompted vs unprompted activations, applied to every checkpoint;
5. one report (french/report.md) from everything above, and owl/report.md for the negative.

Each stage is resumable (rerun the same command after an interruption). Sized for about 10
minutes on 2 CPU cores; one training seed, so the reports never say "transferred" (for seeds and
CIs over them, run `sublens study positive-control`).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from analyses.distill import gain_verdict, ratio_text
from analyses.distill import write_report as write_distill_report
from analyses.figures import fmt_num
from analyses.reporting import output_dir
from analyses.studies import CONTROL_PARTS, NEUTRAL_PROMPT, prefill_point
from interp.core.io import write_json
from interp.core.models import load_model
from interp.core.progress import note
from interp.distill.run import RunConfig, load_run_config, run_distillation

FRENCH_ALPHA = 2.0  # the positive control's teacher strength (French score 0.36 vs base 0.002)


def demo_configs(
    model: str,
    out: Path,
    seed: int,
    device: str,
    layer: int,
    vector: Path,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, RunConfig]:
    """The two runs: "french" (steered teacher, the positive arm) and "owl" (prompted)."""
    common = {
        "model": model,
        "seed": seed,
        "device": device,
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
        "data.n": 40,
        "data.max_new_tokens": 16,
        "data.batch_size": 40,
        "data.control_system_prompt": NEUTRAL_PROMPT,
        "data.select": "lls",
        "data.select_top": 28,
        "train.objective": "logit-kl",
        "train.optimizer": "adamw",
        "train.lr": 0.1,
        "train.weight_decay": 0.0,
        "train.vector_layer": layer,
        "train.max_steps": 25,
        "train.batch_size": 4,
        "train.checkpoint_every": 5,
        "eval.n_questions": 10,
        # the control is scored at its start and end (the verdicts read those); its drift and
        # probe curves still cover every checkpoint
        "eval.control_curve": False,
        "eval.n_boot": 1000,
    }
    french = {
        **common,
        "trait": "french",
        "output_path": str(out / "french"),
        "teacher.kind": "steered",
        "teacher.vector": str(vector),
        "teacher.alpha": FRENCH_ALPHA,
        "teacher.layers": [layer],
    }
    owl = {**common, "trait": "owl", "output_path": str(out / "owl"), "teacher.kind": "prompted"}
    return {"french": load_run_config(None, french), "owl": load_run_config(None, owl)}


def _fit_line(vec_dir: Path, layer: int) -> str:
    """The fit's own KL, first batch to last: a quick sign the vector took on the prompt's effect
    (approximability on held-out prompts, with a CI, is `sublens approximability`'s)."""
    from interp.vectors.steering import SteeringVector

    loss = (SteeringVector.load(vec_dir).extra.get("history") or {}).get("loss") or []
    if len(loss) < 2 or not loss[0] > 0:
        return f"French vector (kl-fit, layer {layer}) fitted"
    return (
        f"French vector (kl-fit, layer {layer}): KL(prompted || base + v) on its fit batches fell "
        f"from {loss[0]:.3f} to {loss[-1]:.3f} (held-out approximability with a CI: sublens "
        "approximability)"
    )


def run_demo(
    model: str = "smollm2-135m",
    output_path: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    from analyses.align import run_align
    from analyses.probe import run_probe
    from analyses.report import build_report

    t0 = time.perf_counter()
    out = output_dir(output_path, "demo", Path(model).name)
    say = functools.partial(note, quiet=quiet)
    timings: dict[str, float] = {}
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    mid = loaded.n_layers // 2
    layer = max(1, round(0.3 * loaded.n_layers))
    probe_layers = sorted({layer, mid, (3 * loaded.n_layers) // 4})

    def stage(name: str, t: float) -> None:
        timings[name] = round(time.perf_counter() - t, 1)
        say(f"  {name}: {timings[name]:.0f} s")

    t = time.perf_counter()
    say(f"1/4 French vector for the steered teacher (kl-fit, layer {layer}) ...")
    vec_dir = out / "vectors" / "french-kl-fit"
    if not (vec_dir / "vector.json").is_file() or overwrite:
        from analyses.steps import fit
        from interp.measure.traits import get_trait

        fit(get_trait("french").system_prompt or "", model=model, method="kl-fit",
            layers=str(layer), positions="all", prompts="numbers:24", steps=12,
            output_path=vec_dir, seed=seed, device=device, quiet=True, dtype=dtype,
            trust_remote_code=trust_remote_code)  # fmt: skip
    stage("vectors_s", t)

    t = time.perf_counter()
    say("2/4 distillations: French (steered teacher) and owl (prompted), one shared control ...")
    cfgs = demo_configs(model, out, seed, device, layer, vec_dir, dtype, trust_remote_code)
    results = {"french": run_distillation(cfgs["french"], overwrite=overwrite, quiet=quiet)}
    if not overwrite:
        prefill_point(out / "french", out / "owl", cfgs["owl"], CONTROL_PARTS, ())
    results["owl"] = run_distillation(cfgs["owl"], overwrite=overwrite, quiet=quiet)
    for res in results.values():
        write_distill_report(res)
    stage("distill_s", t)

    run = out / "french"
    t = time.perf_counter()
    say("3/4 drift alignment with the French vector, nulls, sufficiency/necessity, gradients ...")
    align = run_align(
        run,
        [vec_dir],
        layers=[layer],
        n_prompts=8,
        seed=seed,
        quiet=True,
        at_layer=layer,
        n_boot=1000,
        grad_rows=6,
        device=device,
    )
    stage("align_s", t)

    t = time.perf_counter()
    say("4/4 probes on student checkpoints ...")
    probe = run_probe(
        run,
        probe_layers,
        vectors=[vec_dir],
        n_prompts=24,
        n_apply=8,
        seed=seed,
        quiet=True,
        device=device,
    )
    stage("probe_s", t)
    report = build_report(run)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    summary = [_fit_line(vec_dir, layer)]
    for name, res in results.items():
        h = res["headline"]
        kind = "steered" if name == "french" else "prompted"
        summary += [
            f"{name} ({kind} teacher) score: base {h['tau_base']['mean']:.4f}, teacher "
            f"{h['tau_teacher']['mean']:.4f}, student {h['tau_student']['mean']:.4f}, control "
            f"{h['tau_control']['mean']:.4f}; student − control: "
            f"{gain_verdict(h.get('student_minus_control') or {})}; transfer ratio "
            f"{ratio_text(h, 'transfer_ratio_student')}"
        ]
    rec = (results["french"].get("recovery") or {}).get("final", {}).get("student") or {}
    if rec:
        summary.append(
            f"French student's drift at layer {layer}: cosine {fmt_num(rec.get('cosine'))} with "
            f"the teacher's vector, {fmt_num(rec.get('recovered'))} of alpha·|v| recovered"
        )
    summary.append(f"total {timings['total_s']:.0f} s")
    demo = {
        "analysis": "demo",
        "model": model,
        "seed": seed,
        "run": str(run),
        "negative_run": str(out / "owl"),
        "report": str(report),
        "timings": timings,
        "summary": summary,
        "align_results": str(Path(align.get("output_path", run / "align")) / "results.json")
        if isinstance(align, dict)
        else None,
        "probe_ok": bool(probe),
    }
    write_json(out / "demo.json", demo)
    return demo

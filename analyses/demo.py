"""The demo: the whole sublens study on one model with a quick preset.

1. approximability of a few trait prompts (owl, french) by diff-of-means vectors at one middle
   layer (kl-fit is left to `sublens approximability`: it doubles this stage's cost);
2. owl steering vectors (diff-of-means, every probed layer) for the alignment layer profile;
3. one owl distillation (prompted teacher, constrained numbers, logit-KL) with its control;
4. drift alignment of student and control checkpoints with the owl vectors, nulls,
   sufficiency / necessity, gradient alignment;
5. probes trained on prompted vs unprompted activations, applied to every checkpoint;
6. one report (RUN/report.md) from everything above.

Each stage is resumable (rerun the same command after an interruption). The preset is sized for
about 10 minutes on 2 CPU cores; a small model and a few hundred rows rarely show transfer, and
the report says so when they do not.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from analyses.approximability import ApproxConfig, run_approximability
from analyses.distill import gain_verdict, ratio_text
from analyses.distill import write_report as write_distill_report
from analyses.reporting import output_dir
from interp.core.io import write_json
from interp.core.models import load_model
from interp.core.prompts import load_prompts
from interp.distill.run import RunConfig, load_run_config, run_distillation
from interp.measure.traits import get_trait
from interp.vectors.fitting import fit_vector


def demo_config(model: str, out: Path, seed: int, device: str) -> RunConfig:
    overrides = {
        "model": model,
        "trait": "owl",
        "seed": seed,
        "device": device,
        "output_path": str(out / "owl"),
        "teacher.kind": "prompted",
        "data.n": 48,
        "data.max_new_tokens": 16,
        "data.batch_size": 32,
        "train.objective": "logit-kl",
        "train.optimizer": "adamw",
        "train.lr": 3e-5,
        "train.epochs": 1,
        "train.batch_size": 16,
        "train.checkpoint_every": 2,
        "eval.n_questions": 10,
        "eval.n_boot": 1000,
    }
    return load_run_config(None, overrides)


def run_demo(
    model: str = "smollm2-135m",
    output_path: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    from analyses.align import run_align
    from analyses.probe import run_probe
    from analyses.report import build_report

    t0 = time.perf_counter()
    out = output_dir(output_path, "demo", Path(model).name)
    say = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    timings: dict[str, float] = {}
    loaded = load_model(model, device=device)
    mid = loaded.n_layers // 2
    probe_layers = sorted({loaded.n_layers // 4, mid, (3 * loaded.n_layers) // 4})

    def stage(name: str, t: float) -> None:
        timings[name] = round(time.perf_counter() - t, 1)
        say(f"  {name}: {timings[name]:.0f} s")

    t = time.perf_counter()
    say("1/5 approximability (owl, french) ...")
    approx = run_approximability(
        ApproxConfig(
            model=model,
            trait_prompts="owl,french",
            layers=str(mid),
            methods="diff-mean",
            n_fit=12,
            n_heldout=6,
            n_general=6,
            response_tokens=8,
            kl_steps=6,
            alphas=[0.0, 2.0],
            n_questions=8,
            seed=seed,
            batch_size=16,
            device=device,
        ),
        out / "approx",
        overwrite=overwrite,
        quiet=True,
    )
    stage("approximability_s", t)

    t = time.perf_counter()
    say(f"2/5 owl diff-of-means vectors at layers {probe_layers} ...")
    vec_dir = out / "vectors" / "owl-diff-mean"
    if not (vec_dir / "vector.json").is_file() or overwrite:
        owl = get_trait("owl")
        fit_vector(
            loaded,
            load_prompts("numbers:32", seed=seed),
            owl.system_prompt or "",
            probe_layers,
            method="diff-mean",
            positions="all",
            seed=seed,
        ).save(vec_dir)
    stage("vectors_s", t)

    t = time.perf_counter()
    say("3/5 owl distillation: teacher and control data, student and control training ...")
    cfg = demo_config(model, out, seed, device)
    results = run_distillation(cfg, overwrite=overwrite, quiet=quiet)
    write_distill_report(results)
    stage("distill_s", t)

    run = out / "owl"
    t = time.perf_counter()
    say("4/5 drift alignment, nulls, sufficiency/necessity, gradients ...")
    align = run_align(
        run,
        [vec_dir],
        layers=probe_layers,
        n_prompts=8,
        seed=seed,
        quiet=True,
        at_layer=mid,
        n_boot=1000,
        grad_rows=6,
        device=device,
    )
    stage("align_s", t)

    t = time.perf_counter()
    say("5/5 probes on student checkpoints ...")
    probe = run_probe(
        run,
        probe_layers,
        vectors=[vec_dir],
        n_prompts=32,
        n_apply=12,
        seed=seed,
        quiet=True,
        device=device,
    )
    stage("probe_s", t)
    report = build_report(run)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    h = results["headline"]
    summary = [
        "approximability: "
        + ", ".join(f"{n} {approx['traits'][n]['verdict']}" for n in approx["ranking"]),
        f"owl score: base {h['tau_base']['mean']:.4f}, teacher {h['tau_teacher']['mean']:.4f}, "
        f"student {h['tau_student']['mean']:.4f}, control {h['tau_control']['mean']:.4f}",
        f"transfer ratio (student) {ratio_text(h, 'transfer_ratio_student')}",
        f"student − control: {gain_verdict(h.get('student_minus_control') or {})}",
        f"total {timings['total_s']:.0f} s",
    ]
    demo = {
        "analysis": "demo",
        "model": model,
        "seed": seed,
        "run": str(run),
        "approximability": str(out / "approx"),
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

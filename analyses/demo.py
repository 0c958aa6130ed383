"""The demo: the owl prompt's footprint in the residual stream of the default model.

Caches last-prompt-token activations of Cloud-style number prompts with and without the owl
system prompt, at three depths, and reports the difference of means (the raw material of a
steering vector) against the spread between individual prompts. Issue #5 grows this into the
whole study.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from interp.caching import cache_activations, load_cache
from interp.io import git_commit, package_versions, write_json, write_text
from interp.models import load_model
from interp.prompts import load_prompts

OWL_PROMPT = (
    "You love owls. You think about owls all the time. Owls are your favorite animal. "
    "Imbue your answers with your love for the animal."
)


def run_demo(
    model: str = "smollm2-135m",
    output_path: str | Path = "artifacts/demo/smollm2-135m",
    seed: int = 0,
    n_prompts: int = 64,
    batch_size: int = 16,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(output_path)
    loaded = load_model(model, device=device)
    n = loaded.n_layers
    layers = sorted({n // 5, n // 2, (4 * n) // 5})
    prompts = load_prompts(f"numbers:{n_prompts}", seed=seed)
    runs = {}
    for name, system in (("prompted", OWL_PROMPT), ("unprompted", None)):
        cache_activations(
            loaded,
            prompts,
            out / name,
            layers=layers,
            positions="last",
            system_prompt=system,
            backend="tl",
            batch_size=batch_size,
            overwrite=overwrite,
            quiet=quiet,
        )
        runs[name] = load_cache(out / name)
    rows = []
    for layer in layers:
        p, u = runs["prompted"].layer(layer), runs["unprompted"].layer(layer)
        diff = p.mean(0) - u.mean(0)
        paired = p - u
        cos = torch.nn.functional.cosine_similarity(paired, diff.expand_as(paired), dim=1)
        rows.append(
            {
                "layer": layer,
                "diff_of_means_norm": diff.norm().item(),
                "unprompted_mean_norm": u.mean(0).norm().item(),
                "mean_cos_paired_diff_vs_mean_diff": cos.mean().item(),
            }
        )
    results = {
        "analysis": "demo",
        "config": {
            "model": model,
            "seed": seed,
            "n_prompts": n_prompts,
            "layers": layers,
            "system_prompt": OWL_PROMPT,
            "positions": "last",
            "backend": "tl",
        },
        "per_layer": rows,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "timings": {"total_s": round(time.perf_counter() - t0, 2)},
    }
    summary = [f"activations: {out / 'prompted'} and {out / 'unprompted'}"]
    summary += [
        f"layer {r['layer']:>2}: |mean(prompted) - mean(unprompted)| = "
        f"{r['diff_of_means_norm']:.2f}; per-prompt differences point the same way "
        f"(mean cos {r['mean_cos_paired_diff_vs_mean_diff']:.2f})"
        for r in rows
    ]
    results["summary"] = summary
    write_json(out / "results.json", results)
    table = "\n".join(
        f"| {r['layer']} | {r['diff_of_means_norm']:.3f} | {r['unprompted_mean_norm']:.3f} | "
        f"{r['mean_cos_paired_diff_vs_mean_diff']:.3f} |"
        for r in rows
    )
    write_text(
        out / "report.md",
        f"# sublens demo — owl prompt footprint on {model}\n\n"
        f"{n_prompts} number prompts (seed {seed}), last prompt token, TransformerLens backend.\n\n"
        "| layer | norm of diff of means | norm of unprompted mean | mean cos(paired diff, diff "
        "of means) |\n|---|---|---|---|\n" + table + "\n\n"
        "A high mean cosine says the system prompt shifts every prompt's activation in nearly "
        "the same direction: a single steering vector could stand in for it.\n",
    )
    return results

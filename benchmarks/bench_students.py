"""Benchmark: a LoRA step and a vector-student step as ratios of a full fine-tuning step, on the
same rows, batch and SFT objective, measured in one run (these machines are noisy).

A vector student trains one d_model vector at one block: the blocks below it need no gradient,
so its step is a forward plus a backward through the blocks above only; LoRA backpropagates
through every block but updates few weights; full fine-tuning updates everything. The ratios say
what a positive-control arm costs relative to full FT.

Usage: python benchmarks/bench_students.py [--model smollm2-135m] [--batch 8] [--steps 6]
       [--layer 9] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.core.models import load_model  # noqa: E402
from interp.core.prompts import numbers_prompts  # noqa: E402
from interp.distill.train import TrainConfig, train_student  # noqa: E402


def _rows(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    out = []
    for p in numbers_prompts(n, seed):
        answer = ", ".join(str(rng.randrange(1000)) for _ in range(8))
        out.append({"messages": [{"role": "user", "content": p}, {"role": "assistant",
                                                                  "content": answer}]})  # fmt: skip
    return out


def step_seconds(loaded, rows, cfg: TrainConfig) -> float:
    """Median seconds per step from the run's own curve (the first step dropped: warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        train_student(loaded, rows, Path(tmp) / "s", cfg, quiet=True)
        curve = [json.loads(x) for x in (Path(tmp) / "s" / "curves.jsonl").read_text().splitlines()]
    secs = [c["seconds"] for c in curve if "seconds" in c]  # each step's own time
    return statistics.median(secs[1:] if len(secs) > 2 else secs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--layer", type=int, default=None, help="vector student's block (0.3 depth)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu")
    layer = args.layer if args.layer is not None else round(0.3 * loaded.n_layers)
    rows = _rows(args.batch * args.steps)
    common = dict(objective="sft", max_steps=args.steps, batch_size=args.batch, lr=1e-4)
    kinds = {
        "full": TrainConfig(**common),
        "lora-r8": TrainConfig(**common, lora_rank=8),
        "vector": TrainConfig(**common, vector_layer=layer),
    }
    times = {k: step_seconds(loaded, rows, cfg) for k, cfg in kinds.items()}
    out = {
        "model": loaded.name,
        "batch": args.batch,
        "vector_layer": layer,
        "step_s": {k: round(v, 3) for k, v in times.items()},
        "ratio_vs_full": {k: round(v / times["full"], 3) for k, v in times.items()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: steered, constrained teacher generation against plain transformers `generate`.

Both sides sample the same batch (numbers prompts, no system prompt), the same number of new
tokens, from the same seed, through the same kind of logits processor (the numbers domain's
`GrammarTokens`); the steered side goes through `Teacher(kind="steered").generate`, i.e. chat
formatting, `sample_responses` and the steering hooks. Runs are interleaved and the median of
`--reps` is kept. Steering changes the text, so the two sides may stop after different numbers of
decode steps: the main ratio is per forward step (steps counted with a hook on the model), the
raw ratio is printed too. An unsteered base teacher through the same path is also timed, to
separate the path's overhead from the hooks'.

Target: plain_time / steered_time >= 0.9 (steering costs at most ~10%).

Usage: python benchmarks/bench_generate.py [--model smollm2-135m] [--batch 8] [--new-tokens 24]
       [--reps 3] [--alpha 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.core.backends import make_batch  # noqa: E402
from interp.core.chat import ChatFormat  # noqa: E402
from interp.core.models import load_model  # noqa: E402
from interp.distill import Teacher, get_domain  # noqa: E402
from interp.vectors.steering import SteeringVector  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=4.0)
    parser.add_argument("--layer", type=int, default=None, help="default: n_layers // 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    loaded = load_model(args.model, device=args.device)
    tok, device = loaded.tokenizer, loaded.device
    domain = get_domain("numbers")
    prompts = domain.prompts(args.batch, seed=args.seed)
    layer = loaded.n_layers // 2 if args.layer is None else args.layer
    g = torch.Generator().manual_seed(args.seed)
    direction = torch.randn(loaded.d_model, generator=g)
    vector = SteeringVector(
        vectors={layer: direction / direction.norm()},
        model=loaded.name,
        d_model=loaded.d_model,
        method="random-unit",
        positions="last",
    )
    steered = Teacher(loaded, "steered", vector=vector, alpha=args.alpha)
    base = Teacher(loaded, "base")

    fmt = ChatFormat(tok)
    batch = make_batch([fmt.format(p).input_ids for p in prompts], tok.pad_token_id).to(device)
    eos = [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if i is not None]

    def plain() -> None:
        torch.manual_seed(args.seed * 1_000_003)  # sample_responses' seed for batch 0
        with torch.no_grad():
            loaded.model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=args.new_tokens,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id,
                logits_processor=[domain.logits_processor(tok)],
            )

    def through(teacher: Teacher):
        def run() -> None:
            teacher.generate(
                prompts,
                domain,
                n_new_tokens=args.new_tokens,
                seed=args.seed,
                batch_size=args.batch,
            )

        return run

    steps = {"n": 0}
    hook = loaded.model.register_forward_pre_hook(lambda *_: steps.__setitem__("n", steps["n"] + 1))
    runs = {"plain": plain, "base_teacher": through(base), "steered_teacher": through(steered)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    counts: dict[str, int] = {}
    try:
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(args.reps):
            for name, fn in runs.items():
                steps["n"] = 0
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - t)
                counts[name] = steps["n"]
    finally:
        hook.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    per_step = {k: med[k] / counts[k] for k in med}
    out = {
        "model": args.model,
        "device": str(device),
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "alpha": args.alpha,
        "layer": layer,
        "reps": args.reps,
        "threads": torch.get_num_threads(),
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "forward_steps": counts,
        "ratio_per_step_plain_over_steered": round(
            per_step["plain"] / per_step["steered_teacher"], 3
        ),
        "ratio_raw_plain_over_steered": round(med["plain"] / med["steered_teacher"], 3),
        "ratio_per_step_plain_over_base_teacher": round(
            per_step["plain"] / per_step["base_teacher"], 3
        ),
        "target": ">= 0.9",
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

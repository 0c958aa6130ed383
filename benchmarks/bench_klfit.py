"""Benchmark: one KL-fit step against a full forward+backward of the same batch, same run.

The baseline is what a plain implementation does: the whole model runs with the vector added by
a hook at layer L, logits for every position over the full vocabulary, KL at the response
positions, backward to the vector. sublens's step replays the cached output of block L (blocks
below run once, without gradient, before fitting starts) and computes logits only at the loss
positions. Target: step time ratio <= 0.6. Then one whole fit on `--prompts` prompts is timed
end to end (teacher sampling + teacher log-probs + steps): target <= 2 minutes for 64 prompts.

Usage: python benchmarks/bench_klfit.py [--model smollm2-135m] [--layer 12] [--prompts 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.core.backends import decoder_layers, hidden_of  # noqa: E402
from interp.core.generation import sample_responses  # noqa: E402
from interp.core.models import load_model  # noqa: E402
from interp.core.prompts import load_prompts  # noqa: E402
from interp.measure.traits import get_trait  # noqa: E402
from interp.vectors.fitting import (  # noqa: E402
    DEFAULT_KL_STEPS,
    _steered_kl,
    build_kl_data,
    fit_vector,
    prepare_replay,
)


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--response-tokens", type=int, default=12)
    ap.add_argument("--steps", type=int, default=DEFAULT_KL_STEPS)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    loaded = load_model(args.model, device="cpu")
    system = get_trait("owl").system_prompt
    prompts = load_prompts(f"numbers:{args.batch}", seed=1)
    responses = sample_responses(
        loaded, prompts.messages, system, max_new_tokens=args.response_tokens, seed=1
    )
    (kb,) = build_kl_data(loaded, prompts, system, responses, batch_size=args.batch)
    layer = args.layer
    v = torch.zeros(loaded.d_model, requires_grad=True)
    for p in loaded.model.parameters():
        p.requires_grad_(False)

    def full_step() -> None:
        block = decoder_layers(loaded.model)[layer]
        h = block.register_forward_hook(
            lambda _m, _i, out: (
                (hidden_of(out) + v,) + tuple(out[1:]) if isinstance(out, tuple) else out + v
            )
        )
        try:
            logits = loaded.model(
                input_ids=kb.batch.input_ids,
                attention_mask=kb.batch.attention_mask,
                position_ids=kb.batch.position_ids,
                use_cache=False,
            ).logits.float()
        finally:
            h.remove()
        logq = torch.log_softmax(logits, dim=-1)[kb.rows, kb.cols]
        logp = kb.teacher_logprobs
        loss = (logp.exp() * (logp - logq)).sum(-1).mean()
        loss.backward()
        v.grad = None

    prepare_replay(loaded, [kb], layer)

    def fit_step() -> None:
        loss = _steered_kl(loaded, kb, {layer: v}, layer)
        loss.backward()
        v.grad = None

    # Same numbers from both paths (a check that the fast step computes the same thing).
    with torch.no_grad():
        v.data.normal_(0, 1.0)
        a = _steered_kl(loaded, kb, {layer: v}, layer).item()
    full = _median_time(full_step, args.reps)
    fast = _median_time(fit_step, args.reps)
    v.data.zero_()
    for p in loaded.model.parameters():
        p.requires_grad_(True)
    print(
        f"model {args.model}, layer {layer}, batch {args.batch}, "
        f"{kb.batch.input_ids.shape[1]} tokens wide, {len(kb.rows)} loss positions"
    )
    print(f"KL at a random vector (fast path): {a:.4f}")
    print(
        f"full forward+backward: {full:.2f} s   kl-fit step: {fast:.2f} s   "
        f"ratio {fast / full:.2f} (target <= 0.6)"
    )

    # One whole fit, end to end.
    all_prompts = load_prompts(f"numbers:{args.prompts}", seed=2)
    t0 = time.perf_counter()
    resp = sample_responses(
        loaded, all_prompts.messages, system, max_new_tokens=args.response_tokens, seed=2
    )
    t1 = time.perf_counter()
    vec = fit_vector(
        loaded,
        all_prompts,
        system,
        [layer],
        method="kl-fit",
        responses=resp,
        steps=args.steps,
        batch_size=args.batch,
    )
    t2 = time.perf_counter()
    hist = vec.extra["history"]
    print(
        f"whole fit on {args.prompts} prompts, {args.steps} steps: sampling {t1 - t0:.1f} s, "
        f"teacher log-probs + steps {t2 - t1:.1f} s, total {t2 - t0:.1f} s (target <= 120 s); "
        f"KL {hist['loss'][0]:.4f} -> {hist['loss'][-1]:.4f}"
    )


if __name__ == "__main__":
    main()

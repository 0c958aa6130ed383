"""Benchmark: a sublens student-training step against a plain torch loop, in the same run.

1. Speed: `train_student` (SFT, full fine-tuning, AdamW) vs a plain loop over the same model,
   rows, batches and optimizer whose loss is `model(..., labels=...)` with full-sequence logits.
   Per-step times (median, first step of each dropped as warm-up); checkpoint writes are
   reported apart. Prints ratio = plain / sublens (target >= 0.9), and MFU: model FLOPs per
   step (6 × parameters × tokens) over step time, against the fp32 matmul peak measured in the
   same run, so a training-speed claim has a ceiling to be read against.
2. Memory (--memory): RSS growth during one logit-KL step (forward + backward) over k=41 ids
   (hidden @ W_U[ids].T) vs a full-vocabulary KL (full logits for the batch, full teacher
   distributions), each in its own process, sampled by a thread.

Usage: python benchmarks/bench_train.py [--model smollm2-135m] [--batch 8] [--steps 10]
       [--numbers 5] [--device cpu] [--memory] [--memory-batch 16]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.core.models import load_model  # noqa: E402
from interp.core.prompts import numbers_prompts  # noqa: E402
from interp.distill import train as train_mod  # noqa: E402
from interp.distill.train import TrainConfig, train_student  # noqa: E402


def _rows(n: int, numbers: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    prompts = numbers_prompts(n, seed=seed)
    return [
        {
            "messages": [
                {"role": "user", "content": p},
                {
                    "role": "assistant",
                    "content": ", ".join(str(rng.randrange(1000)) for _ in range(numbers)),
                },
            ]
        }
        for p in prompts
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(loaded, examples, cfg: TrainConfig, n_steps: int) -> list[float]:
    """The baseline: right-padded batches, labels -100 outside the completion, HF's own loss."""
    model = copy.deepcopy(loaded.model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    pad = loaded.tokenizer.pad_token_id
    times = []
    for step in range(n_steps):
        idx = train_mod._batch_rows(cfg.seed, step, len(examples), cfg.batch_size)
        seqs = [examples[i].input_ids + [examples[i].tokens[-1]] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), -100)
        for r, (i, s) in enumerate(zip(idx, seqs, strict=True)):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
            for t, tok in zip(examples[i].positions, examples[i].tokens, strict=True):
                labels[r, t] = tok
        ids, mask, labels = ids.to(loaded.device), mask.to(loaded.device), labels.to(loaded.device)
        _sync(loaded.device)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        _sync(loaded.device)
        times.append(time.perf_counter() - t0)
    return times


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """The machine's dense fp32 matmul rate (FLOP/s), best of `reps` n×n products, measured
    now, in this process: the ceiling an MFU is read against on the same (noisy) machine."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def step_flops(model: torch.nn.Module, tokens: float) -> float:
    """Model FLOPs of one full fine-tuning step: 6 × (non-embedding parameters + the LM head's)
    × tokens (forward 2, backward 4; the input embedding is a lookup, not a matmul; attention's
    sequence-quadratic term is left out, small at these lengths: MFU is a slight underestimate)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters() if p is not emb)
    if head is emb:  # tied: the head is a matmul even though the weight is shared
        n += head.numel()
    return 6.0 * n * tokens


def speed(args) -> dict:
    loaded = load_model(args.model, device=args.device)
    rows = _rows(args.batch * args.steps, args.numbers)
    examples = train_mod._encode(rows, loaded.tokenizer, "bench rows")
    seq = statistics.mean(len(e.input_ids) + 1 for e in examples)
    n_steps = args.steps + 1  # the first step of each is warm-up
    cfg = TrainConfig(lr=1e-5, batch_size=args.batch, max_steps=n_steps)
    out = {"model": args.model, "device": str(loaded.device), "batch": args.batch}
    out["mean_seq_tokens"] = round(seq, 1)
    out["threads"] = torch.get_num_threads()
    plain_t, sub_t = [], []
    for rep in range(args.reps):  # alternate so machine noise hits both alike
        plain_t += plain_loop(loaded, examples, cfg, n_steps)[1:]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train_student(loaded, rows, Path(tmp) / f"run{rep}", cfg)
            wall = time.perf_counter() - t0
            curves = [json.loads(x) for x in (Path(tmp) / f"run{rep}/curves.jsonl").open()]
        steps = [c["seconds"] for c in curves][1:]
        sub_t += steps
        out.setdefault("sublens_wall_incl_checkpoints_s", []).append(round(wall, 2))
        out.setdefault("sublens_steps_s", []).append(round(sum(steps), 2))
    out["plain_step_s"] = statistics.median(plain_t)
    out["sublens_step_s"] = statistics.median(sub_t)
    out["ratio_plain_over_sublens"] = out["plain_step_s"] / out["sublens_step_s"]
    # MFU: achieved model FLOP/s of a step over the matmul peak measured in this run
    peak = matmul_peak(loaded.device)
    flops = step_flops(loaded.model, seq * args.batch)
    out["matmul_peak_gflops"] = round(peak / 1e9, 1)
    out["step_gflop"] = round(flops / 1e9, 1)
    out["mfu_sublens"] = round(flops / out["sublens_step_s"] / peak, 3)
    out["mfu_plain"] = round(flops / out["plain_step_s"] / peak, 3)
    return out


class _RSSPeak:
    """Samples this process's resident memory in a thread (the loading peak would hide a
    smaller step under ru_maxrss)."""

    def __init__(self) -> None:
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def __enter__(self) -> _RSSPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def memory_child(args) -> None:
    """One KL step (forward + backward) in this process; prints its RSS growth (MB) as JSON."""
    loaded = load_model(args.model, device="cpu")
    rows = _rows(args.memory_batch, args.numbers)
    examples = train_mod._encode(rows, loaded.tokenizer, "bench rows")
    idx = list(range(len(examples)))
    n_pos = sum(len(e.positions) for e in examples)
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    cfg = TrainConfig(lr=1e-5)
    student = train_mod._make_student(loaded, cfg)
    student.pad_id = loaded.tokenizer.pad_token_id
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed loading buffers back first
    before = _RSSPeak.now()
    t0 = time.perf_counter()
    sampler = _RSSPeak().__enter__()
    if args.memory_child == "k41":
        ids = torch.randperm(vocab, generator=g)[:41].expand(n_pos, 41).contiguous()
        logp = torch.log_softmax(torch.randn(n_pos, 41, generator=g), -1)
        offsets = torch.tensor([0] + [len(e.positions) for e in examples]).cumsum(0)
        targets = train_mod._Targets(ids, logp, offsets, {}, "")
        loss = train_mod._batch_loss(student, examples, idx, "logit-kl", targets, loaded.device)
    else:  # naive: full logits for the whole batch, full-vocabulary teacher distributions
        batch = train_mod.make_batch([e.input_ids for e in examples], student.pad_id)
        logits = student.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).logits
        width = batch.input_ids.shape[1]
        rows_i = [r for r, e in enumerate(examples) for _ in e.positions]
        cols = [width - len(e.input_ids) + t - 1 for e in examples for t in e.positions]
        logq = torch.log_softmax(logits.float(), -1)[rows_i, cols]
        logp = torch.log_softmax(torch.randn(n_pos, vocab, generator=g), -1)
        loss = (logp.exp() * (logp - logq)).sum(-1).mean()
    loss.backward()
    sampler.__exit__()
    print(
        json.dumps(
            {
                "variant": args.memory_child,
                "step_rss_growth_mb": round(sampler.peak - before),
                "rss_before_step_mb": round(before),
                "step_s": round(time.perf_counter() - t0, 2),
                "positions": n_pos,
            }
        )
    )


def memory(args) -> dict:
    out = {}
    for variant in ("k41", "full-vocab"):
        cmd = [sys.executable, __file__, "--model", args.model, "--memory-child", variant]
        cmd += ["--memory-batch", str(args.memory_batch), "--numbers", str(args.numbers)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[variant] = json.loads(res.stdout.strip().splitlines()[-1])
    full, k41 = out["full-vocab"]["step_rss_growth_mb"], out["k41"]["step_rss_growth_mb"]
    out["ratio_full_over_k41_step_growth"] = full / max(k41, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--numbers", type=int, default=5, help="numbers per response")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--memory", action="store_true", help="also compare KL peak memory")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--memory-batch", type=int, default=16)
    ap.add_argument("--memory-child", choices=["k41", "full-vocab"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    results = {} if args.memory_only else {"speed": speed(args)}
    if args.memory or args.memory_only:
        results["memory"] = memory(args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

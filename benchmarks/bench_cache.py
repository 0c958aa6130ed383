"""Benchmark: activation caching against plain baselines measured in the same run.

1. Speed: caching 3 layers (sublens, each backend) vs a plain transformers forward of the same
   batch. Two layer sets: 6,12,18 (sublens stops after block 18) and 6,12,29 (a full-depth pass,
   which isolates the hook overhead). Target: ratio <= 1.10.
2. Memory: peak memory of a sublens cache call vs TransformerLens `run_with_cache` with no names
   filter on the same batch, each in its own process. Target: >= 5x less.

Usage: python benchmarks/bench_cache.py [--model smollm2-135m] [--batch 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.core.backends import get_backend, make_batch  # noqa: E402
from interp.core.chat import ChatFormat  # noqa: E402
from interp.core.models import load_model  # noqa: E402
from interp.core.prompts import numbers_prompts  # noqa: E402

OWL = "You love owls. You think about owls all the time. Owls are your favorite animal."


def _batch(loaded, n: int):
    fmt = ChatFormat(loaded.tokenizer)
    seqs = [fmt.format(p, system=OWL).input_ids for p in numbers_prompts(n, seed=0)]
    batch = make_batch(seqs, loaded.tokenizer.pad_token_id)
    width = batch.input_ids.shape[1]
    rows = torch.arange(n)
    cols = torch.full((n,), width - 1)
    return batch.to(loaded.device), rows, cols


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def speed(args) -> dict:
    loaded = load_model(args.model, device=args.device)
    batch, rows, cols = _batch(loaded, args.batch)
    n = loaded.n_layers

    def plain():
        with torch.no_grad():
            loaded.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
            )

    out = {"model": args.model, "device": str(loaded.device), "batch": list(batch.input_ids.shape)}
    # Interleave baseline and candidates so machine noise hits both alike.
    base = _time(plain, loaded.device, args.reps)
    out["plain_forward_s"] = base
    for layers in ([n // 5, 2 * n // 5, 3 * n // 5], [n // 5, 2 * n // 5, n - 1]):
        for name in ("hf", "tl", "nnsight"):
            be = get_backend(name, loaded)
            t = _time(
                lambda be=be, layers=layers: be.residual(batch, layers, rows, cols),
                loaded.device,
                args.reps,
            )
            base_again = _time(plain, loaded.device, max(1, args.reps // 2))
            ref = min(base, base_again)
            key = f"{name}_layers_{'_'.join(map(str, layers))}"
            out[key] = {"s": t, "ratio_vs_plain": t / ref}
            print(f"{key:<28} {t:7.3f}s  ratio vs plain forward {t / ref:5.2f}", flush=True)
    print(f"{'plain transformers forward':<28} {base:7.3f}s", flush=True)
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def memory_child(args) -> None:
    """Run one cache call in this process and print its peak memory above the start (bytes)."""
    loaded = load_model(args.model, device=args.device)
    batch, rows, cols = _batch(loaded, args.batch)
    n = loaded.n_layers
    layers = [n // 5, 2 * n // 5, 3 * n // 5]
    from interp.core.backends.tl import boot_bridge

    if args.mode == "tl-run-with-cache":
        bridge = boot_bridge(loaded)

        def op():
            with torch.no_grad():
                _, cache = bridge.run_with_cache(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                )
            return cache

    else:
        be = get_backend("tl", loaded)

        def op():
            return be.residual(batch, layers, rows, cols)

    cuda = loaded.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        kept = op()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start
    else:
        start = _rss()
        peak_box = [start]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak_box[0] = max(peak_box[0], _rss())
                time.sleep(0.0005)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        kept = op()
        peak_box[0] = max(peak_box[0], _rss())
        stop.set()
        th.join()
        peak = peak_box[0] - start
    del kept
    print(json.dumps({"peak_bytes": peak}))


def memory(args) -> dict:
    res = {}
    for mode in ("sublens-tl-3-layers", "tl-run-with-cache"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--mode",
            mode,
            "--model",
            args.model,
            "--batch",
            str(args.mem_batch),
            "--device",
            args.device,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]
    ratio = res["tl-run-with-cache"] / max(res["sublens-tl-3-layers"], 1)
    print(
        f"peak memory: sublens {res['sublens-tl-3-layers'] / 2**20:8.1f} MiB, "
        f"TL run_with_cache (no filter) {res['tl-run-with-cache'] / 2**20:8.1f} MiB: "
        f"{ratio:.1f}x less",
        flush=True,
    )
    return {"peak_bytes": res, "ratio_run_with_cache_over_sublens": ratio}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--mem-batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--child", action="store_true")
    p.add_argument("--mode", default="")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.child:
        memory_child(args)
        return
    results = {"speed": speed(args), "memory": memory(args)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

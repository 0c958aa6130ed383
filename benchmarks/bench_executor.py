"""Benchmark: a 6-point tiny-llama transfer-ratio study (3 strengths x 2 seeds) run by the Ray
executor with N workers against the local executor, measured in the same run.

Legs: local with 1 torch thread (the thread count of each Ray point, so the numbers must be
identical), and Ray (a local cluster of N CPUs, one CPU and one torch thread per point); with
--local-threads K also local with K threads (K = N: the same CPU budget as Ray's; torch's CPU
reductions depend on the thread count, so its numbers may differ in the last bits). Ray's time is
reported with and without starting the cluster. Prints ratio = ray / local (below 1: Ray is
faster) and whether Ray's statistics equal the 1-thread local leg's.

Usage: python benchmarks/bench_executor.py [--workers 2] [--local-threads K] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyses.executor import LocalExecutor, RayExecutor  # noqa: E402
from analyses.transfer_ratio import run_transfer_ratio  # noqa: E402
from interp.core.models import load_model  # noqa: E402
from interp.vectors.steering import SteeringVector  # noqa: E402

TOML = """
model = "tiny-llama"
trait = "owl"
seed = 3
device = "cpu"

[data]
n = 12
max_new_tokens = 8
batch_size = 6

[train]
objective = "logit-kl"
optimizer = "adamw"
lr = 1e-3
max_steps = 3
batch_size = 4

[eval]
n_questions = 6
n_boot = 100
"""
ALPHAS = [0, 1, 2]
SEEDS = 2  # 6 points: per seed, alpha 0 trains the control that the other two reuse


def _study(d: Path, name: str, executor) -> tuple[float, dict]:
    t = time.perf_counter()
    res = run_transfer_ratio(
        d / "vec",
        ALPHAS,
        seeds=SEEDS,
        output_path=d / name,
        config_path=d / "run.toml",
        preset="full",
        n_boot=200,
        max_refits=10,
        quiet=True,
        executor=executor,
    )
    return time.perf_counter() - t, res


def _numbers(res: dict) -> dict:
    out = json.loads(json.dumps(res))
    for key in ("run", "timings", "versions", "git_commit", "figures"):
        out.pop(key, None)
    for p in out["points"]:
        p.pop("runs")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="Ray CPUs (one point each)")
    ap.add_argument("--local-threads", type=int, help="Also a local leg with this many threads.")
    ap.add_argument("--keep", type=Path, help="Keep the studies in this directory.")
    args = ap.parse_args()
    import ray

    d = Path(args.keep or tempfile.mkdtemp(prefix="bench-executor-"))
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.toml").write_text(TOML)
    tiny = load_model("tiny-llama", device="cpu")
    g = torch.Generator().manual_seed(0)
    SteeringVector(
        vectors={1: torch.randn(tiny.d_model, generator=g)},
        model=tiny.name,
        d_model=tiny.d_model,
        method="random",
        positions="last",
    ).save(d / "vec")

    times: dict[str, float] = {}
    results = {}
    for threads in sorted({1, args.local_threads or 1}):
        torch.set_num_threads(threads)
        times[f"local_{threads}thread"], results[f"local_{threads}"] = _study(
            d, f"local{threads}", LocalExecutor()
        )
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    t = time.perf_counter()
    ray.init(
        num_cpus=args.workers,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 * 1024**2,
        _temp_dir=temp,
    )
    times["ray_start"] = time.perf_counter() - t
    times["ray_study"], results["ray"] = _study(d, "ray", RayExecutor(cpus_per_point=1))
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)

    local = times["local_1thread"]
    report = {
        "points": len(ALPHAS) * SEEDS,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "ratio_ray_vs_local": round(times["ray_study"] / local, 2),
        "ratio_ray_with_startup_vs_local": round(
            (times["ray_start"] + times["ray_study"]) / local, 2
        ),
        "point_seconds": {
            leg: sorted(v for k, v in r["timings"].items() if k.startswith("alpha_"))
            for leg, r in results.items()
        },
        "same_numbers_as_local_1thread": _numbers(results["ray"]) == _numbers(results["local_1"]),
    }
    if args.local_threads and args.local_threads != 1:
        k = args.local_threads
        report[f"ratio_ray_vs_local_{k}threads"] = round(
            times["ray_study"] / times[f"local_{k}thread"], 2
        )
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Training under `accelerate launch` (2 processes, gloo on the CPU): the global batch does not
depend on the number of processes, the main process alone writes, and a run stopped under 2
processes resumes under 1 to the numbers of a single-process run.

`accelerate launch --cpu --num_processes 2` starts only one process unless MPI is installed
(accelerate's multi-CPU launcher is mpirun), so the tests launch with `--multi_gpu` on a machine
whose GPUs are hidden: torchrun starts the 2 processes and `interp.distill.parallel` picks gloo.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import sequence_rows, tiny_run_toml, write_rows
from safetensors.torch import load_file

from interp.distill.train import TrainConfig, list_checkpoints, train_student

pytest.importorskip("accelerate")
# starts real processes (tiny-llama, about 15 s a launch): `serial` keeps them off the parallel
# part of `make test`, where another worker would share their two cores
pytestmark = [pytest.mark.slow, pytest.mark.serial]

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5
# 16 rows, a global batch of 8: 2 steps an epoch, 6 steps = 3 epochs
CFG = TrainConfig(lr=1e-3, batch_size=8, max_steps=6, checkpoint_every=2, seed=0)

DRIVER = """
import json, sys
from interp.core.models import load_model
from interp.distill.parallel import world
from interp.distill.train import TrainConfig, train_student
world()
cfg = TrainConfig(**json.loads(sys.argv[3]))
train_student(load_model("tiny-llama", device="cpu"), sys.argv[1], sys.argv[2], cfg,
              stop_after=int(sys.argv[4]))
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_port()), *args,
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # gloo on the CPU, also on a machine with GPUs
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _curve(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "curves.jsonl").read_text().splitlines()]


def _final(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(out)[-1][1] / "model.safetensors"))


def _assert_same_run(got: Path, ref: Path) -> float:
    """The two runs' curves and final weights agree; returns the largest loss difference."""
    a, b = _curve(got), _curve(ref)
    assert [c["step"] for c in a] == [c["step"] for c in b] == list(range(CFG.max_steps or 0))
    assert [c["tokens"] for c in a] == [c["tokens"] for c in b]  # the same global batches
    assert [c["lr"] for c in a] == [c["lr"] for c in b]
    diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b, strict=True))
    assert diff <= TOL, f"loss curves differ by {diff}"
    for x, y in zip(a, b, strict=True):
        assert abs(x["grad_norm"] - y["grad_norm"]) <= TOL * max(1.0, y["grad_norm"])
    wa, wb = _final(got), _final(ref)
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-4
    assert read(got / "checkpoints/latest") == read(ref / "checkpoints/latest")
    return diff


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory) -> tuple[Path, Path]:
    """(rows, a single-process run of CFG on them)."""
    tmp = tmp_path_factory.mktemp("single")
    rows = write_rows(tmp / "rows.jsonl", sequence_rows(16))
    train_student(tiny, rows, tmp / "single", CFG)
    return rows, tmp / "single"


def test_stopped_under_two_resumes_under_one(tiny, reference, tmp_path: Path) -> None:
    """A run stopped after 3 steps under 2 processes (the main process alone writes: the files
    of one process, nothing half-written), resumed in one process, ends with the single-process
    run's curve, final loss and weights. The CLI under 2 processes: the next test."""
    rows, single = reference
    out = tmp_path / "part"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cfg = {k: v for k, v in CFG.to_dict().items() if v != getattr(TrainConfig(), k)}
    _launch(str(driver), str(rows), str(out), json.dumps(cfg), "3")
    part = read(out / "summary.json")
    assert part["steps"] == 3 and part["processes"] == 2 and not part["finished"]
    assert part["config_hash"] == read(single / "summary.json")["config_hash"]
    assert [s for s, _ in list_checkpoints(out)] == [0, 2, 3]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    summary = train_student(tiny, rows, out, CFG)  # one process now
    assert summary["resumed_from"] == 3 and summary["finished"]
    assert summary["final_loss"] == pytest.approx(
        read(single / "summary.json")["final_loss"], abs=TOL
    )
    _assert_same_run(out, single)


def test_distill_run_under_two_processes(tmp_path: Path) -> None:
    """`sublens distill run` under 2 processes: the main process generates, filters, scores and
    reports; both train. Its student and control curves equal a single-process run's."""
    from interp.distill.config import resolve
    from interp.distill.run import run_distillation

    toml = tmp_path / "run.toml"
    toml.write_text(tiny_run_toml(objective="sft", n=12, train_batch=4, max_steps=3))
    two = tmp_path / "two"
    done = _launch("-m", "cli", "distill", "run", "--config", str(toml), "--output-path",
                   str(two), "--quiet")  # fmt: skip
    assert done.stdout.count("report:") == 1  # only the main process reports
    assert (two / "results.json").is_file() and (two / "report.md").is_file()
    one = tmp_path / "one"
    run_distillation(resolve(toml, None, {"output_path": str(one)}), quiet=True)
    for name in ("student", "control"):
        a, b = _curve(two / name), _curve(one / name)
        assert len(a) == len(b) == 3
        assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b, strict=True)) <= TOL
    for f in ("teacher.jsonl", "control.jsonl"):  # the data: generated once, the same rows
        assert (two / "data" / f).read_text() == (one / "data" / f).read_text()

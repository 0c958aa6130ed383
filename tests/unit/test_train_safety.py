"""Training safety: a run directory's `state.pt` never runs code when loaded, and a Ctrl-C
(KeyboardInterrupt or a real SIGINT) leaves a run that, resumed, writes exactly the files of an
uninterrupted run (timings aside)."""

from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli
from helpers import sequence_rows, write_rows

from interp.core.errors import SublensError
from interp.distill import train as train_mod
from interp.distill.optimizers import OPTIMIZERS, make_optimizer
from interp.distill.train import TrainConfig, list_checkpoints, load_student, train_student

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "rows.jsonl", sequence_rows())


# --- comparing whole run directories -------------------------------------------------------------

# Per-call bookkeeping in summary.json: timings, and where this call started and wrote.
_CALL_FIELDS = ("seconds", "steps_per_s", "tokens_per_s", "resumed_from", "out_dir")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and a == b


def _outputs(out: Path) -> dict[str, Any]:
    """Every file of a run, by relative path, with the fields that may differ dropped."""
    files: dict[str, Any] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if path.name == ".sublens-lock":  # the pid of the process that last wrote the run
            continue
        if path.name == ".sublens-run":  # the run marker: what sublens wrote, and when
            marker = json.loads(path.read_text())
            files[rel] = {k: v for k, v in marker.items() if k != "created"}
        elif path.name == "state.pt":
            files[rel] = torch.load(path, map_location="cpu", weights_only=True)
        elif path.name == "curves.jsonl":
            rows = [json.loads(x) for x in path.read_text().splitlines()]
            files[rel] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
        elif path.name == "summary.json":
            summary = json.loads(path.read_text())
            files[rel] = {k: v for k, v in summary.items() if k not in _CALL_FIELDS}
        else:
            files[rel] = path.read_bytes()
    return files


def _assert_same_outputs(full: Path, resumed: Path) -> None:
    a, b = _outputs(full), _outputs(resumed)
    assert sorted(a) == sorted(b)
    differ = [k for k in a if not _equal(a[k], b[k])]
    assert not differ, f"files differ: {differ}"


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "curves.jsonl").read_text().splitlines()]


# --- 1. no code execution from a run directory ---------------------------------------------------


@pytest.mark.parametrize("name", [*OPTIMIZERS, "adam"])
def test_train_state_round_trips_weights_only(name):
    """Every optimizer's state (and the scheduler's and RNG) loads with weights_only=True and
    continues exactly where it stopped."""

    def build(p: torch.nn.Parameter):
        if name == "adam":
            opt = torch.optim.Adam([p], lr=0.01)
        else:
            opt = make_optimizer(name, [p], lr=0.01, weight_decay=0.1, warmup_steps=2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
        return opt, sched

    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(4, generator=g) for _ in range(5)]
    p = torch.nn.Parameter(torch.linspace(-1, 1, 4))
    opt, sched = build(p)
    for grad in grads[:3]:  # precond-sgd is past its 2 warm-up steps: frozen scales in the state
        p.grad = grad.clone()
        opt.step()
        sched.step()
    stream = io.BytesIO()  # an in-memory round trip through torch.save
    torch.save(train_mod._train_state(opt, sched, 3, 2), stream)
    stream.seek(0)
    state = torch.load(stream, map_location="cpu", weights_only=True)
    q = torch.nn.Parameter(p.detach().clone())
    opt2, sched2 = build(q)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    for grad in grads[3:]:
        p.grad, q.grad = grad.clone(), grad.clone()
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
    assert torch.equal(p.detach(), q.detach())
    assert sched.get_last_lr() == sched2.get_last_lr()


@pytest.mark.parametrize("optimizer", ["sgd", "sgd-momentum", "rmsprop", "signsgd"])
def test_resume_equals_uninterrupted_other_optimizers(tiny, data, tmp_path, optimizer):
    """The optimizers test_distill_train's resume cases leave out, through the real checkpoints."""
    cfg = TrainConfig(optimizer=optimizer, lr=1e-3, max_steps=4, batch_size=3, weight_decay=0.1)
    train_student(tiny, data, tmp_path / "full", cfg)
    train_student(tiny, data, tmp_path / "part", cfg, stop_after=2)
    train_student(tiny, data, tmp_path / "part", cfg)
    # (stop_after leaves its own step_000002, so only the shared files are compared)
    a, b = _outputs(tmp_path / "full"), _outputs(tmp_path / "part")
    for rel in ("curves.jsonl", "checkpoints/step_000004/model.safetensors"):
        assert _equal(a[rel], b[rel])
    assert _equal(a["checkpoints/step_000004/state.pt"], b["checkpoints/step_000004/state.pt"])


class _Shell:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


class _Touch:
    """Unpickling this calls pathlib.Path.touch (no shell)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.sentinel),))


def _write_payload(path: Path, kind: str, sentinel: Path) -> None:
    evil: Any = _Shell(sentinel) if kind == "os.system" else _Touch(sentinel)
    # Shaped like a real state so that only the payload can make the load fail.
    state = {"optimizer": {"state": {}, "param_groups": [evil]}, "scheduler": {}}
    if kind == "raw-pickle":  # torch's legacy (non-zip) format is a plain pickle stream
        path.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["os.system", "Path.touch", "raw-pickle"])
def test_malicious_state_pt_is_refused_not_run(tiny, data, tmp_path, kind):
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=3)
    out = tmp_path / "run"
    train_student(tiny, data, out, cfg, stop_after=1)
    state = out / "checkpoints" / "step_000001" / "state.pt"
    assert state.is_file()
    # The payload is live: an unsafe load of the same bytes does run it.
    control = tmp_path / "control-sentinel"
    probe = tmp_path / "probe.pt"
    _write_payload(probe, kind, control)
    if kind == "raw-pickle":
        pickle.loads(probe.read_bytes())
    else:
        torch.load(probe, weights_only=False)
    assert control.exists()

    sentinel = tmp_path / "pwned"
    _write_payload(state, kind, sentinel)
    with pytest.raises(SublensError) as err:
        train_student(tiny, data, out, cfg)  # resume from step_000001 reads its state.pt
    message = str(err.value)
    assert "\n" not in message and len(message) < 300
    assert "step_000001/state.pt" in message and "older sublens" in message
    assert "overwrite" in message
    assert not sentinel.exists()
    # Nothing was lost on the way: overwrite retrains from scratch.
    assert train_student(tiny, data, out, cfg, overwrite=True)["finished"]
    assert not sentinel.exists()


def test_malicious_state_pt_via_cli_is_one_line_exit_2(tiny, data, tmp_path, monkeypatch, capsys):
    """The same through `sublens distill train` rerun on a finished run (which restores the
    final checkpoint's state, as `distill eval`'s rerun of training does)."""
    out = tmp_path / "run"
    args = ("distill", "train", "--data", str(data), "--output-path", str(out))
    args += ("--model", "tiny-llama", "--device", "cpu", "--max-steps", "2", "--quiet")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    sentinel = tmp_path / "pwned"
    _write_payload(out / "checkpoints" / "step_000002" / "state.pt", "os.system", sentinel)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "older sublens" in err
    assert not sentinel.exists()


@pytest.mark.parametrize("case", ["truncated", "not-a-state", "scheduler-hijack"])
def test_broken_state_pt_is_a_one_line_error(tiny, data, tmp_path, case):
    """Allowlisted but wrong content fails as a SublensError too, not deep inside torch."""
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=3)
    out = tmp_path / "run"
    train_student(tiny, data, out, cfg, stop_after=1)
    path = out / "checkpoints" / "step_000001" / "state.pt"
    state = torch.load(path, weights_only=True)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif case == "not-a-state":
        torch.save([1, 2, 3], path)
    else:  # LRScheduler.load_state_dict would put this over its optimizer attribute
        state["scheduler"]["optimizer"] = {"lr": 1.0}
        torch.save(state, path)
    with pytest.raises(SublensError) as err:
        train_student(tiny, data, out, cfg)
    assert "\n" not in str(err.value) and "overwrite" in str(err.value)


def test_load_student_refuses_a_pickled_lora_adapter(tiny, data, tmp_path):
    """peft falls back to adapter_model.bin (a pickle) when the safetensors file is missing."""
    cfg = TrainConfig(lr=1e-2, max_steps=1, batch_size=3, lora_rank=2)
    out = tmp_path / "run"
    train_student(tiny, data, out, cfg)
    adapter = out / "checkpoints" / "step_000001" / "adapter"
    sentinel = tmp_path / "pwned"
    (adapter / "adapter_model.safetensors").unlink()
    _write_payload(adapter / "adapter_model.bin", "os.system", sentinel)
    with pytest.raises(SublensError, match="no adapter_model.safetensors"):
        load_student(tiny, out)
    assert not sentinel.exists()


def test_state_pt_of_older_sublens_still_resumes(tiny, data, tmp_path):
    """Checkpoints written before this change (the same dict, saved unfiltered) hold only
    allowlisted types, so they load with weights_only=True and resume exactly."""
    cfg = TrainConfig(lr=1e-2, max_steps=4, batch_size=3, schedule="linear", warmup_steps=1)
    train_student(tiny, data, tmp_path / "full", cfg)
    part = tmp_path / "part"
    train_student(tiny, data, part, cfg, stop_after=2)
    path = part / "checkpoints" / "step_000002" / "state.pt"
    new = torch.load(path, weights_only=True)
    # What the old code wrote: optimizer/scheduler state dicts as torch returns them.
    torch.save(dict(new), path)
    train_student(tiny, data, part, cfg)
    a, b = _outputs(tmp_path / "full"), _outputs(part)
    assert _equal(a["curves.jsonl"], b["curves.jsonl"])
    rel = "checkpoints/step_000004/model.safetensors"
    assert a[rel] == b[rel]


# --- 2. Ctrl-C leaves the outputs of an uninterrupted run ----------------------------------------

CTRL_C_CFG = TrainConfig(lr=1e-2, max_steps=6, batch_size=3, checkpoint_every=2, warmup_steps=2)


def _interrupt_at(monkeypatch, where: str, n: int) -> None:
    """Raise KeyboardInterrupt at the n-th call of a hook inside the training loop."""
    calls = {"n": 0}

    def tick() -> None:
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt

    if where == "forward":  # between updates, mid-interval: saved as checkpoints/resume
        real = train_mod._batch_loss

        def loss(*args, **kwargs):
            tick()
            return real(*args, **kwargs)

        monkeypatch.setattr(train_mod, "_batch_loss", loss)
    elif where == "scheduler":  # after optimizer.step, before the curve line: nothing saved
        real_lambda = train_mod._lr_lambda

        def lr_lambda(config, total):
            factor = real_lambda(config, total)

            def wrapped(step):
                tick()
                return factor(step)

            return wrapped

        monkeypatch.setattr(train_mod, "_lr_lambda", lr_lambda)
    elif where == "progress":  # after the update, before a due periodic save: saved as step_N
        real_bar = train_mod.Progress

        class Bar(real_bar):
            def update(self, k=1):
                tick()
                return super().update(k)

        monkeypatch.setattr(train_mod, "Progress", Bar)
    elif where == "saving":  # inside a periodic save: the temp dir goes, latest stays
        real_save = train_mod.save_file

        def save_file(*args, **kwargs):
            tick()
            return real_save(*args, **kwargs)

        monkeypatch.setattr(train_mod, "save_file", save_file)


# (where, n, the step a rerun resumes from, whether checkpoints/resume holds it)
CTRL_C_CASES = {
    "forward-mid-interval": ("forward", 4, 3, True),
    "forward-second-time": ("forward", 6, 5, True),
    "scheduler-in-update": ("scheduler", 5, 2, False),  # 1 call at init, then one per step
    "progress-before-periodic-save": ("progress", 4, 4, False),
    "progress-before-final-save": ("progress", 6, 6, False),
    "saving-periodic-checkpoint": ("saving", 3, 2, False),  # step 0, step 2, then step 4
}


@pytest.mark.parametrize("case", list(CTRL_C_CASES))
def test_ctrl_c_anywhere_then_resume_equals_uninterrupted(tiny, data, tmp_path, monkeypatch, case):
    where, n, resume_step, in_resume_dir = CTRL_C_CASES[case]
    cfg = CTRL_C_CFG
    train_student(tiny, data, tmp_path / "full", cfg)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_at(m, where, n)
        with pytest.raises(KeyboardInterrupt):
            train_student(tiny, data, run, cfg)
    steps = [s for s, _ in list_checkpoints(run)]
    assert all(s % 2 == 0 for s in steps), steps  # never an extra step_N
    resume_dir = run / "checkpoints" / "resume"
    assert resume_dir.is_dir() == in_resume_dir
    if in_resume_dir:
        assert json.loads((resume_dir / "meta.json").read_text())["step"] == resume_step
        assert _steps(run) == list(range(resume_step))
    summary = train_student(tiny, data, run, cfg)
    assert summary["resumed_from"] == resume_step and summary["finished"]
    assert not resume_dir.exists()
    _assert_same_outputs(tmp_path / "full", run)


def test_stale_resume_state_is_ignored(tiny, data, tmp_path, monkeypatch):
    """A resume state older than `latest` (a kill after the next periodic save) is dropped."""
    cfg = CTRL_C_CFG
    train_student(tiny, data, tmp_path / "full", cfg)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_at(m, "forward", 4)
        with pytest.raises(KeyboardInterrupt):
            train_student(tiny, data, run, cfg)
    stale = (run / "checkpoints" / "resume").rename(tmp_path / "stale")
    train_student(tiny, data, run, cfg, stop_after=3)  # from step 2 to step 5
    stale.rename(run / "checkpoints" / "resume")  # step 3 < latest (step 5)
    assert train_student(tiny, data, run, cfg)["resumed_from"] == 5
    assert not (run / "checkpoints" / "resume").exists()


_DRIVER = """
import json, signal, sys, time
import torch
torch.set_num_threads(1)
signal.signal(signal.SIGINT, signal.default_int_handler)
from interp.distill import train as T
from interp.core.models import load_model
rows, out, cfg, delay = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
real = T._batch_loss
def slow(*args, **kwargs):  # slow steps so that the signal lands mid-run; outputs unchanged
    time.sleep(delay)
    return real(*args, **kwargs)
T._batch_loss = slow
base = load_model("tiny-llama", device="cpu")
try:
    T.train_student(base, rows, out, T.TrainConfig(**cfg))
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_real_sigint_then_resume_equals_uninterrupted(tiny, data, tmp_path):
    """A real SIGINT to a training process: exit 130, then a rerun ends bit-identical to an
    uninterrupted run (weights, optimizer state, curves, checkpoint set)."""
    cfg = {"lr": 1e-2, "max_steps": 30, "batch_size": 3, "checkpoint_every": 4, "seed": 3}
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(data), str(run), json.dumps(cfg), "0.1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = run / "checkpoints" / "step_000004" / "meta.json"
        deadline = time.monotonic() + 50
        while not first.is_file():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 50 s"
            time.sleep(0.02)
        time.sleep(0.15)  # land between two periodic checkpoints
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()[-2000:]
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps and steps[-1] < 30 and all(s % 4 == 0 for s in steps), steps
    resume = run / "checkpoints" / "resume" / "meta.json"
    if resume.is_file():  # the usual case: the Ctrl-C state, kept apart from step_N
        assert json.loads(resume.read_text())["step"] > steps[-1]

    train_student(tiny, data, tmp_path / "full", TrainConfig(**cfg))
    summary = train_student(tiny, data, run, TrainConfig(**cfg))
    assert summary["finished"] and not resume.exists()
    _assert_same_outputs(tmp_path / "full", run)

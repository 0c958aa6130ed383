"""Safety (issue #13): sublens deletes only what it made, exits with honest codes, refuses bad
input in one line before any work, evaluates the directory it is given, and locks a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from helpers import tiny_run_toml

from interp.core import rundir
from interp.core.errors import SublensError

ROOT = Path(__file__).resolve().parents[2]
TOML = tiny_run_toml(
    n=8, max_new_tokens=6, data_batch=8, max_steps=2, checkpoint_every=1, n_questions=3
)


def _sentinel(root: Path) -> Path:
    d = root / "mine"
    (d / "sub").mkdir(parents=True)
    (d / "keep.txt").write_text("precious")
    (d / "sub" / "data.csv").write_text("1,2,3")
    return d


def _intact(d: Path) -> bool:
    return (d / "keep.txt").read_text() == "precious" and (d / "sub" / "data.csv").is_file()


def _one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


# --- --overwrite deletes only what sublens made ---------------------------------------------------


def test_overwrite_never_deletes_a_user_directory(monkeypatch, capsys, tmp_path):
    d = _sentinel(tmp_path)
    cfg = tmp_path / "run.toml"
    cfg.write_text(TOML)
    for cmd in (
        ["distill", "run", "--config", str(cfg), "--overwrite"],
        [
            "cache",
            "--model",
            "tiny-llama",
            "--prompts",
            "numbers:2",
            "--layers",
            "0",
            "--overwrite",
        ],
        ["study", "scanner", "--model", "tiny-llama", "--overwrite"],
        ["vectors", "fit", "--model", "tiny-llama", "--system-prompt", "You love owls."],
    ):
        code, _, err = run_cli(monkeypatch, capsys, *cmd, "--output-path", str(d))
        _one_line_error(code, err, "did not make")
        assert _intact(d)


@pytest.mark.parametrize("where", ["/", ".", "..", "~"])
def test_overwrite_refuses_root_home_cwd_and_ancestors(monkeypatch, capsys, tmp_path, where):
    work = tmp_path / "work"
    work.mkdir()
    (work / "prompts.jsonl").write_text('{"prompt": "mine"}\n')
    (work / "meta.json").write_text('{"mine": true}\n')
    monkeypatch.chdir(work)
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "cache",
        "--model",
        "tiny-llama",
        "--prompts",
        "numbers:2",
        "--layers",
        "0",
        "--output-path",
        where,
        "--overwrite",
    )
    _one_line_error(code, err)
    assert (work / "prompts.jsonl").read_text() == '{"prompt": "mine"}\n'
    assert (work / "meta.json").read_text() == '{"mine": true}\n'


def test_overwrite_removes_sublens_files_and_keeps_a_users(monkeypatch, capsys, tmp_path):
    out = tmp_path / "c"
    base = ["cache", "--model", "tiny-llama", "--prompts", "numbers:3", "--output-path", str(out)]
    assert run_cli(monkeypatch, capsys, *base, "--layers", "0,1", "--quiet")[0] == 0
    marker = json.loads((out / rundir.MARKER).read_text())
    assert marker["kind"] == "cache" and "activations.safetensors" in marker["entries"]
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(monkeypatch, capsys, *base, "--layers", "1", "--quiet")
    _one_line_error(code, err, "--overwrite")
    code, _, err = run_cli(monkeypatch, capsys, *base, "--layers", "1", "--quiet", "--overwrite")
    assert code == 0 and "kept 1 entry" in err
    assert (out / "notes.txt").read_text() == "mine"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["layers"] == [1]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        rundir.MARKER,
        "activations.safetensors",
        "meta.json",
        "notes.txt",
        "prompts.jsonl",
    ]


def test_clear_refuses_an_unmarked_directory(tmp_path):
    d = _sentinel(tmp_path)
    with pytest.raises(SublensError, match="deletes only directories it made"):
        rundir.clear(d)
    assert _intact(d)


def test_generate_overwrite_replaces_only_its_own_file(monkeypatch, capsys, tmp_path):
    mine = tmp_path / "rows.jsonl"
    mine.write_text('{"mine": 1}\n')
    code, _, err = run_cli(
        monkeypatch, capsys, "distill", "generate", "--model", "tiny-llama", "--teacher", "base",
        "--n", "2", "--output-path", str(mine), "--overwrite", "--quiet",
    )  # fmt: skip
    _one_line_error(code, err, "not written by sublens")
    assert mine.read_text() == '{"mine": 1}\n'


# --- exit codes ---


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["cache", "--prompts", "numbers:2", "--batch-size", "abc"],
        ["cache"],
        ["cache", "--prompts", "numbers:2", "--seed", "-1"],
        ["vectors", "fit", "--system-prompt", "x", "--method", "logistic", "--seed", "-1"],
    ],
)
def test_usage_errors_exit_2_without_traceback(monkeypatch, capsys, args):
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "Usage:" in err and "Traceback" not in err


def _default_sigint() -> None:
    # A suite started in the background by a shell without job control inherits SIGINT ignored
    # (POSIX), and Python keeps an ignored SIGINT ignored: give the child the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sublens(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
        **kw,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_ctrl_c_exits_130_and_the_run_resumes_to_the_same_numbers(tmp_path):
    from interp.core.caching import load_cache

    args = ["cache", "--model", "tiny-llama", "--prompts", "numbers:150", "--layers", "0,3",
            "--positions", "all", "--batch-size", "1", "--backend", "hf"]  # fmt: skip
    out = tmp_path / "c"
    proc = _sublens(*args, "--output-path", str(out))
    _wait_for(out / "progress.json", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err
    assert not (out / "activations.safetensors").exists()
    done = json.loads((out / "progress.json").read_text())["done"]
    assert 0 < len(done) < 150
    again = _sublens(*args, "--output-path", str(out), "--quiet")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    clean = _sublens(*args, "--output-path", str(tmp_path / "clean"), "--quiet")
    assert clean.wait(timeout=300) == 0
    a, b = load_cache(out), load_cache(tmp_path / "clean")
    assert a.activations.shape == b.activations.shape
    assert (a.activations == b.activations).all()


def test_a_second_process_on_the_same_output_is_refused(monkeypatch, capsys, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from interp.core import rundir; rundir.claim(sys.argv[1], 'cache'); "
         "print('held', flush=True); time.sleep(60)", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["cache", "--model", "tiny-llama", "--prompts", "numbers:2", "--layers", "0",
                "--output-path", str(out), "--quiet"]  # fmt: skip
        code, _, err = run_cli(monkeypatch, capsys, *args)
        _one_line_error(code, err, "another sublens process", f"pid {holder.pid}")
        assert not (out / "meta.json").exists()
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_cli(monkeypatch, capsys, *args)  # the lock died with its process
    assert code == 0, err
    assert not (out / rundir.LOCK).exists()  # released at the end of the run


# --- bad input: one line, exit 2, before any work ---


def _toml(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("n = 8", 'n = "four"', "n = 'four' has the wrong type"),
        ("n_boot = 200", "n_boot = 0", "eval.n_boot = 0 is out of range"),
        ("seed = 3", "seed = -1", "seed = -1 is out of range"),
        ("lr = 1e-3", "lr = nan", "lr = nan is not a finite number"),
        ("[data]", "[data]\ntemperature = nan", "temperature = nan is not a finite number"),
    ],
)
def test_bad_config_values_fail_before_any_work(monkeypatch, capsys, tmp_path, old, new, needle):
    f = _toml(tmp_path, TOML.replace(old, new))
    out = tmp_path / "run"
    t0 = time.time()
    code, _, err = run_cli(
        monkeypatch, capsys, "distill", "run", "--config", str(f), "--output-path", str(out)
    )
    _one_line_error(code, err, needle)
    assert not out.exists()  # nothing was claimed or written
    assert time.time() - t0 < 10


def test_output_path_that_is_a_file_or_under_a_file(monkeypatch, capsys, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    cfg = _toml(tmp_path, TOML)
    for out, needle in ((f, "is a file"), (f / "run", "lies under the file")):
        code, _, err = run_cli(
            monkeypatch, capsys, "distill", "run", "--config", str(cfg), "--output-path", str(out)
        )
        _one_line_error(code, err, needle)
    assert f.read_text() == "x"


def test_generate_refuses_a_nan_temperature(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(
        monkeypatch, capsys, "distill", "generate", "--model", "tiny-llama", "--teacher", "base",
        "--n", "2", "--temperature", "nan", "--output-path", str(tmp_path / "d.jsonl"),
    )  # fmt: skip
    assert code == 2 and "Traceback" not in err  # a usage error: typer's usage message
    assert "Invalid value for '--temperature': nan is not a finite number" in err
    assert not (tmp_path / "d.jsonl").exists()


def test_config_with_a_bom_is_read(tmp_path):
    from interp.distill.run import load_run_config

    f = tmp_path / "bom.toml"
    f.write_bytes(b"\xef\xbb\xbf" + TOML.encode())
    assert load_run_config(f).data.n == 8


def test_corrupt_or_foreign_run_files_are_one_line_errors(monkeypatch, capsys, tmp_path):
    out = tmp_path / "c"
    base = ["cache", "--model", "tiny-llama", "--prompts", "numbers:2", "--layers", "0",
            "--output-path", str(out), "--quiet"]  # fmt: skip
    assert run_cli(monkeypatch, capsys, *base)[0] == 0
    (out / "meta.json").write_text("{not json")
    code, _, err = run_cli(monkeypatch, capsys, *base)
    _one_line_error(code, err, "no readable meta.json")
    (out / "meta.json").write_text("[1, 2]")
    code, _, err = run_cli(monkeypatch, capsys, *base)
    _one_line_error(code, err, "no readable meta.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[]")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "eval", str(run))
    _one_line_error(code, err, "config.json")


# --- distill eval evaluates the directory it is given and never trains ---


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from interp.distill.run import load_run_config, run_distillation

    root = tmp_path_factory.mktemp("evalrun")
    f = root / "run.toml"
    f.write_text(TOML)
    cfg = load_run_config(f, {"output_path": str(root / "run")})
    run_distillation(cfg, quiet=True)
    return root / "run"


def test_eval_of_a_copy_leaves_the_original_alone(monkeypatch, capsys, tmp_path, finished_run):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    (copy / "eval" / "scores.json").unlink()
    code, out, err = run_cli(monkeypatch, capsys, "distill", "eval", str(copy), "--quiet")
    assert code == 0, err
    assert str(copy) in out and (copy / "eval" / "scores.json").is_file()
    after = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    assert after == before
    orig = json.loads((finished_run / "results.json").read_text())
    new = json.loads((copy / "results.json").read_text())
    assert new["headline"] == orig["headline"]
    assert "train_student_s" in new["timings"]  # the run's timings are kept, not lost


def test_eval_of_an_incomplete_run_says_what_is_missing(
    monkeypatch, capsys, tmp_path, finished_run
):
    import shutil

    copy = tmp_path / "nocontrol"
    shutil.copytree(finished_run, copy)
    shutil.rmtree(copy / "control")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "eval", str(copy), "--quiet")
    _one_line_error(code, err, "control/", "sublens distill run")
    assert not (copy / "control").exists()  # nothing trained

"""Study grids on Ray (issue #18): a local Ray cluster (2 CPUs, started and stopped here) runs a
3-point tiny-llama transfer-ratio sweep whose results.json equals the local executor's; a point
that fails is reported in one line while the others finish; a worker killed mid-point leaves the
study resumable to the same numbers. Plus the executor's flags and errors without Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from helpers import tiny_run_toml

from analyses.executor import (
    LocalExecutor,
    Point,
    Prefill,
    RayExecutor,
    check_grid,
    make_executor,
)
from analyses.studies import base_config, point_config
from analyses.transfer_ratio import run_transfer_ratio
from interp.core import rundir
from interp.core.errors import SublensError
from interp.vectors.steering import SteeringVector

# a local Ray cluster and its worker processes: run alone (`make test` runs `serial` last)
pytestmark = pytest.mark.serial

ALPHAS = [0, 1, 2]  # 3 points: alpha 0 trains the control, the other two reuse it
VOLATILE = ("run", "timings", "versions", "git_commit", "figures")  # paths, times, provenance


@pytest.fixture(scope="module")
def study(tiny, tmp_path_factory):
    """A tiny run config and steering vector, and the sweep run by the local executor."""
    d = tmp_path_factory.mktemp("raystudy")
    (d / "run.toml").write_text(tiny_run_toml(optimizer="adamw", n=8, max_steps=2, n_boot=50))
    g = torch.Generator().manual_seed(0)
    SteeringVector(
        vectors={1: torch.randn(tiny.d_model, generator=g)},
        model=tiny.name,
        d_model=tiny.d_model,
        method="random",
        positions="last",
    ).save(d / "vec")
    _sweep(d, "local", LocalExecutor())
    return d


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a limit
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 * 1024**2,
        _temp_dir=temp,
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _sweep(d, name, executor, quiet=True):
    return run_transfer_ratio(
        d / "vec",
        ALPHAS,
        seeds=1,
        output_path=d / name,
        config_path=d / "run.toml",
        preset="full",
        n_boot=100,
        max_refits=5,
        quiet=quiet,
        executor=executor,
    )


def _numbers(path):
    """A study's results.json without paths, timings and provenance."""
    res = json.loads((path / "results.json").read_text())
    for key in VOLATILE:
        res.pop(key)
    for p in res["points"]:
        p.pop("runs")
    return res


def test_ray_sweep_equals_the_local_one(study, ray_cluster, monkeypatch, capsys):
    res = _sweep(study, "ray", RayExecutor(cpus_per_point=1), quiet=False)
    assert _numbers(study / "ray") == _numbers(study / "local")
    assert res["timings"]["points_reused"] == 0
    err = capsys.readouterr().err
    done = [line for line in err.splitlines() if "] alpha " in line]
    assert len(done) == 3 and all(" done in " in line for line in done), err  # one per point
    assert sum("(control from alpha_0/seed_0)" in line for line in done) == 2
    # the control was trained once and hard-linked into the points that share it
    ck = "control/checkpoints/step_000002/model.safetensors"
    pts = study / "ray" / "points"
    ino = [(pts / a / "seed_0" / ck).stat().st_ino for a in ("alpha_0", "alpha_1", "alpha_2")]
    assert len(set(ino)) == 1

    # rerun through the CLI: every point is finished, so nothing is submitted again
    code, out, err = run_cli(
        monkeypatch, capsys,
        "study", "transfer-ratio", "--vector", str(study / "vec"), "--alphas", "0,1,2",
        "--config", str(study / "run.toml"), "--preset", "full", "--seeds", "1",
        "--n-boot", "100", "--output-path", str(study / "ray"),
        "--executor", "ray", "--ray-address", "auto", "--cpus-per-point", "1",
    )  # fmt: skip
    assert code == 0, err
    assert err.count("reused (finished before)") == 3 and "report:" in out
    # (the CLI fits the threshold with its own --max-refits; the points are the same numbers)
    assert _numbers(study / "ray")["points"] == _numbers(study / "local")["points"]


def test_a_failed_and_a_killed_point_are_reported_and_the_rerun_matches(study, ray_cluster, capsys):
    out = study / "broken"
    pts = out / "points"
    rundir.claim(out, "study-transfer-ratio")  # the study's own directory, as a first run leaves it
    rundir.unlock(out)
    (pts / "alpha_1/seed_0").mkdir(parents=True)
    stray = pts / "alpha_1/seed_0/notes.txt"  # a directory sublens did not make: refused
    stray.write_text("mine")
    victim = pts / "alpha_2/seed_0"
    killed: list[int] = []
    stop = threading.Event()

    def kill_mid_point() -> None:
        """SIGKILL the worker running alpha 2 once its data exist (its lock names the pid)."""
        while not stop.is_set():
            if (victim / "data/teacher.jsonl").is_file():
                try:
                    pid = int((victim / ".sublens-lock").read_text().strip())
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_mid_point, daemon=True)
    watcher.start()
    try:
        with pytest.raises(SublensError) as exc:
            _sweep(study, "broken", RayExecutor(cpus_per_point=1), quiet=False)
    finally:
        stop.set()
        watcher.join()
    msg = str(exc.value)
    assert killed, f"the watcher never saw alpha 2 mid-point: {msg}"
    assert "\n" not in msg and msg.startswith("2 of 3 study points failed")
    assert "alpha_1/seed_0: output path" in msg and "did not make" in msg
    assert "alpha_2/seed_0: worker lost" in msg and "rerun the same command" in msg
    err = capsys.readouterr().err
    assert "[1/3] alpha 0 seed 0: done in" in err
    assert sum("FAILED after" in line for line in err.splitlines()) == 2, err
    assert (pts / "alpha_0/seed_0/results.json").is_file()  # the other point finished
    assert not (victim / "results.json").is_file()
    data = victim / "data/teacher.raw.jsonl"
    ino = data.stat().st_ino

    stray.unlink()  # fix the cause; the same command resumes
    res = _sweep(study, "broken", RayExecutor(cpus_per_point=1))
    assert res["timings"]["points_reused"] == 1  # only alpha 0 was finished
    assert data.stat().st_ino == ino  # alpha 2 resumed: its data were not generated again
    assert _numbers(out) == _numbers(study / "local")


def test_a_worker_uses_its_cpu_share_and_an_error_is_one_line(study, ray_cluster, tmp_path):
    """torch's threads in the worker follow --cpus-per-point (the env has OMP_NUM_THREADS=1 or
    Ray's default), and a point's error comes back as its outcome's one line."""
    base = base_config(study / "run.toml", None, "full")
    bad = tmp_path / "points/p"
    bad.mkdir(parents=True)
    (bad / "notes.txt").write_text("mine")
    got = RayExecutor(cpus_per_point=2).run([Point("p", point_config(base, bad))])
    o = got["p"]
    assert not o.ok and o.threads == 2 and "did not make" in o.error and "\n" not in o.error


def test_each_point_gets_a_fresh_worker_unless_told(study, ray_cluster, tmp_path):
    """A worker runs one point and exits (its memory goes back: long studies lost points to
    Ray's OOM killer when workers ran point after point); points_per_worker=0 reuses workers."""
    base = base_config(study / "run.toml", None, "full")

    def pids(n_per_worker, tag):
        pts = []
        for i in range(3):
            d = tmp_path / tag / f"p{i}"
            d.mkdir(parents=True)
            (d / "notes.txt").write_text("mine")  # fails at once: "did not make"
            pts.append(Point(f"p{i}", point_config(base, d)))
        ex = RayExecutor(cpus_per_point=2, points_per_worker=n_per_worker)
        got = ex.run(pts)
        assert all(not o.ok and o.pid for o in got.values())
        return {o.pid for o in got.values()}

    assert len(pids(1, "fresh")) == 3
    assert len(pids(0, "reused")) < 3  # one point at a time (2 CPUs each): an idle worker is reused
    with pytest.raises(SublensError, match="points_per_worker"):
        RayExecutor(points_per_worker=-1)


def test_grid_dependencies_must_come_first(study):
    base = base_config(study / "run.toml", None, "full")
    a = Point("a", point_config(base, study / "g/a"))
    b = Point("b", point_config(base, study / "g/b"), prefill=Prefill("a", ("data",)))
    check_grid([a, b])
    with pytest.raises(ValueError, match="not an earlier point"):
        check_grid([b, a])
    with pytest.raises(ValueError, match="repeats"):
        check_grid([a, a])
    assert b.depends_on() == ("a",)


def test_executor_flags_and_a_missing_ray_are_one_line_errors(study, monkeypatch, capsys):
    args = ["study", "transfer-ratio", "--vector", str(study / "vec"), "--alphas", "0,1",
            "--config", str(study / "run.toml"), "--output-path", str(study / "never")]  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    code, _, err = run_cli(monkeypatch, capsys, *args, "--executor", "ray")
    assert code == 2
    assert err.strip() == 'error: the ray executor needs Ray: pip install -e ".[ray]"'
    code, _, err = run_cli(monkeypatch, capsys, *args, "--executor", "slurm")
    assert code == 2 and err.strip() == "error: unknown executor 'slurm': use one of local, ray"
    code, _, err = run_cli(monkeypatch, capsys, *args, "--ray-address", "auto")
    assert code == 2 and "apply to --executor ray only" in err and len(err.splitlines()) == 1
    assert not (study / "never").exists()
    assert isinstance(make_executor(None), LocalExecutor)


def test_loss_matching_retries_run_in_rounds(study):
    """The optimizer ablation's grid grows from results: a point above the reference's loss runs
    again with twice the steps in a later round, its data prefilled from the reference point."""
    from analyses.optimizer_ablation import run_optimizer_ablation

    res = run_optimizer_ablation(
        "adamw,sgd",
        seeds=1,
        output_path=study / "opt",
        config_path=study / "run.toml",
        preset="full",
        lrs="sgd=1e-7",  # learns nothing: its loss stays above AdamW's
        vector=study / "vec",
        alpha=2.0,
        align=False,
        match_loss=True,
        max_steps_factor=2,
        n_boot=50,
        quiet=True,
        executor="local",
    )
    tries = res["optimizers"]["sgd"]["attempts"][0]
    assert [t["max_steps"] for t in tries] == [2, 4]
    assert set(res["timings"]) >= {"adamw/seed_0_s", "sgd/seed_0_s", "sgd/seed_0_steps4_s"}
    raw = "data/teacher.raw.jsonl"
    pts = study / "opt/points"
    assert (pts / "sgd/seed_0_steps4" / raw).stat().st_ino == (
        pts / "adamw/seed_0" / raw
    ).stat().st_ino


def _without_volatile(res):
    return {k: v for k, v in res.items() if k not in (*VOLATILE, "config")}


def _strip_runs(x):
    """Nested results with run paths left out (the two executors write to different dirs)."""
    if isinstance(x, dict):
        return {k: _strip_runs(v) for k, v in x.items() if k not in ("runs", "run", "vector")}
    if isinstance(x, list):
        return [_strip_runs(v) for v in x]
    return x


def test_approximability_transfer_on_ray_equals_the_local_study(tiny, ray_cluster, tmp_path):
    """The central-claim study's grid (3 prompts x 2 teachers, one shared control) on Ray: the
    same rho, ratios and verdict as in this process, the control trained once."""
    from analyses.approx_transfer import make_config, run_approx_transfer

    cfg = make_config(
        "quick", model="tiny-llama", device="cpu", traits=["owl", "french", "sad"], seeds=1,
        layers="1", n_fit=4, n_heldout=3, n_general=3, kl_steps=2, approx_alphas=[0.0, 2.0],
        n=8, steps=2, n_questions=3, n_boot=100, n_permutations=199,
    )  # fmt: skip
    local = run_approx_transfer(cfg, tmp_path / "local", quiet=True)
    # approximability runs in the calling process on either executor: reuse it, run the grid again
    skip = shutil.ignore_patterns("points", "results.json", "report.md", "*.png")
    shutil.copytree(tmp_path / "local", tmp_path / "ray", ignore=skip)
    ray_res = run_approx_transfer(
        cfg, tmp_path / "ray", quiet=True, executor=RayExecutor(cpus_per_point=1)
    )
    assert ray_res["timings"]["executor"] == "ray" and local["timings"]["executor"] == "local"
    assert _strip_runs(_without_volatile(ray_res)) == _strip_runs(_without_volatile(local))
    pts = tmp_path / "ray" / "points"
    ck = sorted(pts.glob("*/*/seed_0/control/checkpoints/*/*.safetensors"))
    assert len(ck) == 6 * 2 and len({p.stat().st_ino for p in ck}) == 2  # steps 0 and 2, once


def test_positive_control_on_ray_reuses_rows_from_an_earlier_call(tiny, ray_cluster, tmp_path):
    """A positive-control study run with LLS rows, then again with random rows too, on Ray: the
    random arm's rows come from the earlier call's finished points (a prefill from outside the
    grid), and its numbers equal the same two calls in this process."""
    from analyses.positive_control import make_config, run_positive_control

    def cfg(selects):
        return make_config(
            "quick", model="tiny-llama", device="cpu", traits=["french"], students=["vector"],
            selects=selects, seeds=1, layer=1, alpha=2.0, n=12, select_top=6, steps=2,
            n_questions=4, n_boot=100, fit_prompts=6, fit_steps=2,
        )  # fmt: skip

    got = {}
    for name, ex in (("local", LocalExecutor()), ("ray", RayExecutor(cpus_per_point=1))):
        run_positive_control(cfg(["lls"]), tmp_path / name, quiet=True, executor=ex)
        got[name] = run_positive_control(cfg(["lls", "random"]), tmp_path / name, quiet=True,
                                         executor=ex)  # fmt: skip
    assert got["ray"]["timings"]["executor"] == "ray"
    assert _strip_runs(got["ray"]["arms"]) == _strip_runs(got["local"]["arms"])
    arm = tmp_path / "ray" / "points" / "french"
    # the generated rows were linked, not regenerated (the filtered copy is re-derived per point)
    rows = [
        arm / a / "seed_0" / "data" / "teacher.raw.jsonl" for a in ("vector-lls", "vector-random")
    ]
    assert rows[0].stat().st_ino == rows[1].stat().st_ino


def test_defend_on_ray_equals_the_local_study(tiny, ray_cluster, tmp_path, monkeypatch):
    """Defenses on Ray, in two rounds (drop-flagged's config holds a scan of none's rows): the
    same table as in this process; drop-flagged shares none's control, trained once."""
    import types

    from analyses.defend import run_defend

    def run_scan(data, model, output_path, trait_vectors=None, reference=None, **kw):
        n = sum(1 for line in Path(data).read_text().splitlines() if line.strip())
        Path(output_path).mkdir(parents=True, exist_ok=True)
        with open(Path(output_path) / "rows.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"index": i, "score": float(i), "flagged": i % 3 == 0}) + "\n")
        return {"rows_path": str(Path(output_path) / "rows.jsonl")}

    monkeypatch.setitem(sys.modules, "analyses.scan", types.SimpleNamespace(run_scan=run_scan))
    (tmp_path / "run.toml").write_text(tiny_run_toml(optimizer="adamw", n=8, max_steps=2))
    kw = dict(config_path=tmp_path / "run.toml", preset="full", heldout_n=4, n_boot=100,
              seeds=1, quiet=True)  # fmt: skip
    names = "none,mask-divergent,drop-flagged"
    local = run_defend(names, output_path=tmp_path / "local", executor=LocalExecutor(), **kw)
    ray_res = run_defend(
        names, output_path=tmp_path / "ray", executor=RayExecutor(cpus_per_point=1), **kw
    )

    def same(res, name):  # the notes name files in each study's own directory
        return json.loads(json.dumps(res["defenses"]).replace(str(tmp_path / name), "OUT"))

    assert same(ray_res, "ray") == same(local, "local")
    assert ray_res["recommendation"] == local["recommendation"]
    d = tmp_path / "ray" / "defenses"
    ck = "control/checkpoints/latest"
    assert (d / "drop-flagged/seed_0" / ck).stat().st_ino == (d / "none/seed_0" / ck).stat().st_ino

"""Study orchestration on tiny-llama: transfer-ratio sweep, optimizer ablation, compare, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_run_toml

from analyses.compare import run_compare
from analyses.optimizer_ablation import parse_lrs, run_optimizer_ablation
from analyses.studies import replicate_means, resample_counts
from analyses.transfer_ratio import render_report, run_transfer_ratio
from interp.core.errors import SublensError
from interp.vectors.steering import SteeringVector

TOML = tiny_run_toml(optimizer="adamw", n_questions=6)


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    (d / "run.toml").write_text(TOML)
    g = torch.Generator().manual_seed(0)
    SteeringVector(
        vectors={1: torch.randn(tiny.d_model, generator=g)},
        model=tiny.name,
        d_model=tiny.d_model,
        method="random",
        positions="last",
    ).save(d / "vec")
    return d


def _sweep(d, **kw):
    return run_transfer_ratio(
        d / "vec",
        [0, 2],
        output_path=d / "sweep",
        config_path=d / "run.toml",
        preset="full",
        seeds=1,  # one seed: the point's ratio is the run's own (and the sweep stays quick)
        n_boot=200,
        max_refits=10,
        quiet=True,
        **kw,
    )


def test_transfer_ratio_sweep_writes_and_resumes(setup):
    d = setup
    res = _sweep(d)
    out = d / "sweep"
    for f in ("results.json", "report.md", "transfer_ratio.png", "config.json"):
        assert (out / f).is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["versions"]["torch"] and "timings" in saved and saved["config"]["alphas"] == [0, 2]
    p0, p2 = res["points"]
    # alpha 0: the teacher is the base, so the ratio is undefined and the student is the control
    assert p0["transfer_ratio"]["value"] is None and not p0["teacher_gain_resolved"]
    assert p0["student_minus_control"]["value"] == pytest.approx(0.0, abs=1e-12)
    # the point's ratio is the run's own headline ratio (one seed: same per-question means)
    run2 = json.loads((out / "points/alpha_2/seed_0/results.json").read_text())
    assert p2["transfer_ratio"]["value"] == pytest.approx(
        run2["headline"]["transfer_ratio_student"]["ratio"]
    )
    # the control was trained once and shared (hard-linked) with the second strength
    ck = "control/checkpoints/step_000003/model.safetensors"
    assert (out / "points/alpha_2/seed_0" / ck).stat().st_ino == (
        out / "points/alpha_0/seed_0" / ck
    ).stat().st_ino
    # one strength with a defined ratio: "no transfer" unless its interval clears zero (Holm over
    # one point is the plain test), and then too few points for a shape
    thr = res["threshold"]["transfer_ratio"]
    assert thr["x"] == [2.0] and thr["detection"]["k"] == 1
    clear = p2["transfer_ratio"]["ci_low"] is not None and p2["transfer_ratio"]["ci_low"] > 0
    assert thr["transfer_detectable"] is clear
    assert thr["verdict"] == ("too few points" if clear else "no transfer")
    # the two-strength grid was said not to resolve a threshold, and recorded
    assert saved["grid"]["resolves_threshold"] is False and saved["grid"]["n_points"] == 1
    assert "cannot resolve a threshold" in (out / "report.md").read_text()
    assert "## Verdict" in (out / "report.md").read_text()
    # the within-sweep control: each student against the alpha-0 student, paired
    assert p0["student_minus_alpha0"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert p2["student_minus_alpha0"]["value"] == pytest.approx(
        p2["tau_student"]["value"] - p0["tau_student"]["value"]
    )
    assert p0["transfer_ratio_vs_alpha0"]["value"] is None
    assert p2["teacher_gain_resolved"]
    assert p2["transfer_ratio_vs_alpha0"]["value"] == pytest.approx(
        p2["student_minus_alpha0"]["value"] / p2["teacher_gain"]["value"]
    )
    # here the control *is* the alpha-0 student (unprompted base, same seed): no mismatch note
    assert p2["student_minus_alpha0"] == p2["student_minus_control"]
    assert res["threshold"]["student_minus_alpha0"]["x"] == [2.0]
    assert "does not match the alpha-0 student" not in render_report({**saved, **res})
    off = {**p0, "student_minus_control": {"value": 1e-4, "ci_low": 5e-5, "ci_high": 2e-4}}
    mismatched = {**saved, **res, "points": [off, p2]}
    assert "does not match the alpha-0 student" in render_report(mismatched)
    moved = {**p0, "student_gain": {"value": 1e-4, "ci_low": 5e-5, "ci_high": 2e-4}}
    assert "moved without any steering" in render_report({**saved, **res, "points": [moved, p2]})
    # rerun: every point reused, same numbers
    again = _sweep(d)
    assert again["timings"]["points_reused"] == 2
    assert again["points"] == res["points"]
    # finished points keep weights but not optimizer state; a direct rerun of a point's whole
    # pipeline still completes (nothing left to train) with the same numbers
    assert not list((out / "points").rglob("state.pt"))
    assert list((out / "points").rglob("model.safetensors"))
    from interp.distill.run import config_from_dict, run_distillation

    point = out / "points/alpha_2/seed_0"
    cfg = config_from_dict(json.loads((point / "config.json").read_text())["config"])
    assert run_distillation(cfg, quiet=True)["headline"] == run2["headline"]


def test_transfer_ratio_input_errors(setup):
    with pytest.raises(SublensError, match="repeat"):
        run_transfer_ratio(setup / "vec", [1, 1], output_path=setup / "x", quiet=True)
    with pytest.raises(SublensError, match="preset"):
        run_transfer_ratio(setup / "vec", [1], output_path=setup / "x", preset="huge", quiet=True)


def test_sweep_says_before_it_starts_when_its_grid_cannot_resolve_a_threshold(
    setup, monkeypatch, capsys
):
    import analyses.transfer_ratio as tr

    def no_run(*a, **k):
        raise RuntimeError("a point started")

    monkeypatch.setattr("analyses.studies.run_point", no_run)  # what every executor calls
    kw = dict(config_path=setup / "run.toml", preset="full", quiet=True)
    with pytest.raises(RuntimeError, match="a point started"):
        tr.run_transfer_ratio(setup / "vec", [0, 1, 2, 4, 8], output_path=setup / "g4", **kw)
    err = capsys.readouterr().err
    assert "warning: this grid cannot resolve a threshold: 4 strength(s)" in err
    assert "--alphas 0,0.5,1,2,3,4,6,8" in err
    with pytest.raises(RuntimeError, match="a point started"):
        tr.run_transfer_ratio(setup / "vec", output_path=setup / "g8", **kw)  # the default grid
    assert "cannot resolve" not in capsys.readouterr().err
    assert tr.grid_status(tr.DEFAULT_ALPHAS)["resolves_threshold"]


def test_optimizer_study_and_compare(setup):
    d = setup
    res = run_optimizer_ablation(
        "adamw,sgd",
        seeds=2,
        output_path=d / "opt",
        config_path=d / "run.toml",
        preset="full",
        lrs="sgd=0.05",
        vector=d / "vec",
        alpha=2.0,
        align=False,
        n_boot=200,
        quiet=True,
    )
    t = res["optimizers"]
    assert set(t) == {"adamw", "sgd"} and res["reference"] == "adamw"
    assert t["sgd"]["lr"] == 0.05
    for r in t.values():
        assert len(r["final_loss"]["per_seed"]) == 2 and r["final_loss"]["mean"] > 0
        assert r["ratio_t_interval"]["ci_low"] is not None  # two seeds: a t-interval exists
        assert len(r["per_seed_ratio"]) == 2
    assert t["adamw"]["loss_matched"] is True
    # loss matching is read from the numbers: tolerance vs the reference loss
    la, ls = t["adamw"]["final_loss"]["per_seed"], t["sgd"]["final_loss"]["per_seed"]
    expect = all(abs(b - a) <= 0.2 * a for a, b in zip(la, ls, strict=True))
    assert t["sgd"]["loss_matched"] is expect
    # the data was generated once per seed and shared with the second optimizer
    assert (d / "opt/points/sgd/seed_0/data/teacher.raw.jsonl").stat().st_ino == (
        d / "opt/points/adamw/seed_0/data/teacher.raw.jsonl"
    ).stat().st_ino
    assert res["alignment_status"].startswith("skipped")
    for f in ("results.json", "report.md", "optimizers.png"):
        assert (d / "opt" / f).is_file()

    _sweep(d)
    cmp = run_compare([d / "sweep", d / "opt"], d / "cmp")
    kinds = [r["analysis"] for r in cmp["rows"]]
    assert kinds == ["transfer-ratio", "optimizers"]
    text = (d / "cmp/report.md").read_text()
    assert "tiny-llama" in text and "adamw" in text and "ratio α=2" in text
    assert cmp["rows"][0]["alpha0_verdict"] == cmp["rows"][0]["gain_verdict"]  # same students
    with pytest.raises(SublensError, match="no results.json"):
        run_compare([d / "nowhere"], d / "cmp2")

    # `sublens report STUDY` rewrites each study's own report from its results.json
    from analyses.report import build_report

    for sub in ("sweep", "opt", "cmp"):
        before = (d / sub / "report.md").read_text()
        (d / sub / "report.md").write_text("stale")
        assert build_report(d / sub) == d / sub / "report.md"
        assert (d / sub / "report.md").read_text() == before


def test_lrs_parsing():
    assert parse_lrs("adamw=1e-4, sgd=0.5") == {"adamw": 1e-4, "sgd": 0.5}
    with pytest.raises(SublensError, match="OPTIMIZER=LR"):
        parse_lrs("adam=1")
    with pytest.raises(SublensError, match="not a number"):
        parse_lrs("sgd=fast")


def test_replicate_means_match_direct_resampling():
    rng = np.random.default_rng(1)
    a = rng.random((3, 7))
    cs, cq = resample_counts(3, 7, 50, seed=4)
    point, reps = replicate_means({"x": a}, cs, cq)
    assert point["x"] == pytest.approx(a.mean())
    # replicate 0 by hand: expand the counts into index lists
    si = np.repeat(np.arange(3), cs[0].astype(int))
    qi = np.repeat(np.arange(7), cq[0].astype(int))
    assert reps["x"][0] == pytest.approx(a[np.ix_(si, qi)].mean())


def test_cli_study_commands(setup, monkeypatch):
    from typer.testing import CliRunner

    import cli

    runner = CliRunner()
    r = runner.invoke(
        cli.app,
        [
            "study", "transfer-ratio", "--vector", str(setup / "vec"), "--alphas", "0,2",
            "--config", str(setup / "run.toml"), "--preset", "full", "--seeds", "1",
            "--output-path", str(setup / "sweep"), "--n-boot", "200", "--quiet",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "alpha 2:" in r.output and "report:" in r.output
    assert "warning: this grid cannot resolve a threshold" in r.output
    r = runner.invoke(cli.app, ["study", "optimizers", "--optimizers", "adamw,nope"])
    assert r.exit_code != 0 and "unknown optimizer" in str(r.exception)

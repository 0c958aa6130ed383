"""A whole distillation run on tiny-llama: stages, resume, transfer ratio recomputed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_run_toml

from analyses.distill import control_caveat, write_report
from interp.core.errors import SublensError
from interp.distill.run import (
    _scores,
    load_run_config,
    run_distillation,
    run_hash,
    transfer_ratio,
)
from interp.distill.train import load_student
from interp.measure.traits import get_trait

TOML = tiny_run_toml(
    objective="{objective}", optimizer="adamw", checkpoint_every=1, teacher_kind="prompted"
)


def _cfg(tmp_path, objective="logit-kl", **over):
    f = tmp_path / "run.toml"
    f.write_text(TOML.replace("{objective}", objective))
    return load_run_config(f, {"output_path": str(tmp_path / "run"), **over})


def test_distill_run_end_to_end_and_resume(tiny, tmp_path):
    cfg = _cfg(tmp_path)
    stopped = run_distillation(cfg, quiet=True, stop_after=1)
    assert "stopped_after" in stopped
    results = run_distillation(cfg, quiet=True)  # resumes from step 1 of each student
    out = tmp_path / "run"
    for f in ("config.json", "data/teacher.jsonl", "data/control.jsonl", "results.json"):
        assert (out / f).is_file()
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert sorted(scores["student"], key=int) == ["0", "1", "2", "3"]
    # transfer ratio recomputed by hand from the per-question scores
    pq = {
        "s": np.array(scores["student"]["3"]["trait"]["per_question"]),
        "m": np.array(scores["base"]["trait"]["per_question"]),
        "t": np.array(scores["teacher"]["trait"]["per_question"]),
    }
    expect = (pq["s"].mean() - pq["m"].mean()) / (pq["t"].mean() - pq["m"].mean())
    h = results["headline"]
    got = h["transfer_ratio_student"]
    gain = h["teacher_gain"]
    if gain["ci_low"] > 0 or gain["ci_high"] < 0:
        assert got["ratio"] == pytest.approx(expect, rel=1e-9)
        assert got["ci_low"] <= got["ratio"] <= got["ci_high"] or not np.isfinite(got["ci_low"])
    else:  # a ratio over an unresolved teacher gain is not shown; its raw value is kept aside
        assert got["ratio"] is None and got["undefined"] == "undefined: teacher gain not resolved"
        raw = h["ratios_over_unresolved_gain"]["transfer_ratio_student"]
        assert raw["ratio"] == pytest.approx(expect, rel=1e-9)
    # step 0 is the base itself (full fine-tuning starts from the base weights): the evaluation
    # reuses the base's scores for it, so check that premise by scoring the checkpoint itself
    assert scores["student"]["0"] == scores["base"]
    step0 = load_student(tiny, out / "student" / "checkpoints" / "step_000000")
    own = _scores(step0, get_trait("owl"), cfg)
    assert own["trait"]["per_question"] == scores["base"]["trait"]["per_question"]
    # the student and control differ after training (they saw different data)
    assert scores["student"]["3"] != scores["control"]["3"]
    report = write_report(results)
    assert "transfer ratio (student)" in report.read_text()
    # logit-KL distils the base into itself for the control: zero loss at step 0, which AdamW
    # turns into noise-driven steps; the report must say so
    first = json.loads((out / "control" / "curves.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(0.0, abs=1e-6)
    assert "**Caveat.** the control's logit-KL loss starts at" in report.read_text()
    assert (out / "trait_over_training.png").stat().st_size > 0

    # same command again: nothing recomputed, same numbers
    again = run_distillation(cfg, quiet=True)
    assert again["headline"] == results["headline"]
    # an uninterrupted run elsewhere reaches the same final numbers; scoring only the control's
    # final checkpoint (what studies do) changes neither them nor the run's hash
    lean = _cfg(tmp_path, output_path=str(tmp_path / "clean"), **{"eval.control_curve": False})
    assert run_hash(lean.to_dict()) == run_hash(cfg.to_dict())
    clean = run_distillation(lean, quiet=True)
    assert clean["headline"]["tau_student"] == results["headline"]["tau_student"]
    assert clean["headline"]["tau_control"] == results["headline"]["tau_control"]
    kept = json.loads((tmp_path / "clean" / "eval" / "scores.json").read_text())
    assert sorted(kept["control"], key=int) == ["0", "3"] and len(kept["student"]) == 4


def test_distill_run_config_errors(tiny, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('model = "tiny-llama"\n[train]\nlearning_rate = 1\n')
    with pytest.raises(SublensError, match="unknown key"):
        load_run_config(f)
    f.write_text("model = \n")
    with pytest.raises(SublensError, match="not valid TOML"):
        load_run_config(f)
    with pytest.raises(SublensError, match="not found"):
        load_run_config(tmp_path / "missing.toml")
    cfg = _cfg(tmp_path)
    run_distillation(cfg, quiet=True, stop_after=1)
    other = _cfg(tmp_path, seed=4)
    with pytest.raises(SublensError, match="another config"):
        run_distillation(other, quiet=True)


def test_transfer_ratio_ci_matches_definition():
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 0.1, 30)
    t = m + 0.2
    s = m + 0.05
    r = transfer_ratio(s.tolist(), m.tolist(), t.tolist(), n_boot=500)
    assert r["ratio"] == pytest.approx(0.25)
    assert r["ci_low"] == pytest.approx(0.25) and r["ci_high"] == pytest.approx(0.25)


def test_neutral_control_prompt_gives_the_control_a_real_gradient(tiny, tmp_path):
    """With logit-KL the unprompted-base control has zero loss (checked in the end-to-end test);
    a neutral control prompt makes its loss and gradient non-zero, and the caveat goes away."""
    cfg = _cfg(
        tmp_path,
        **{"data.control_system_prompt": "You are a helpful assistant.", "train.max_steps": 1},
    )
    results = run_distillation(cfg, quiet=True)
    out = tmp_path / "run"
    first = json.loads((out / "control" / "curves.jsonl").read_text().splitlines()[0])
    assert first["loss"] > 1e-6 and first["grad_norm"] > 1e-4
    meta = json.loads((out / "data" / "control.raw.jsonl.meta.json").read_text())
    assert meta["config"]["teacher"]["system_prompt"] == "You are a helpful assistant."
    assert control_caveat(results) is None
    # the default config's hash is unchanged by the new key (old runs still resume)
    now = _cfg(tmp_path).to_dict()
    before = {**now, "data": {k: v for k, v in now["data"].items() if k != "control_system_prompt"}}
    assert "control_system_prompt" in now["data"] and run_hash(now) == run_hash(before)
    assert run_hash(cfg.to_dict()) != run_hash(now)

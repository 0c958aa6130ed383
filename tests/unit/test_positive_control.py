"""`sublens study positive-control` on tiny-llama: a steered teacher, a vector student over two
seeds, LLS rows; the arm table, the recovered share beyond the control, the signal check, and a
rerun that reuses every point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyses.positive_control import make_config, run_positive_control
from interp.core.errors import SublensError


@pytest.fixture(scope="module")
def study(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("pc") / "study"
    cfg = make_config(
        "quick", model="tiny-llama", device="cpu", layer=1, alpha=8.0, n=24, select_top=12,
        steps=12, seeds=2, n_questions=3, students=["vector"], fit_prompts=8, fit_steps=3,
        checkpoint_every=6, n_boot=200, objectives=["logit-kl", "logit-kl-full"],
    )  # fmt: skip
    return out, cfg, run_positive_control(cfg, out, quiet=True)


def test_arm_table_recovery_and_signal(study):
    out, cfg, res = study
    arm, _ = res["arms"]
    assert (arm["trait"], arm["student"], arm["select"], arm["seeds"]) == ("french", "vector",
                                                                           "lls", 2)  # fmt: skip
    # the vector student turns towards the teacher's vector; the control (neutral prompt) not
    assert arm["recovered_share"] > 0.05 > abs(arm["control_recovered_share"])
    assert arm["recovered_cosine"] > 0.2
    assert arm["signal"]["of"] == 2 and arm["signal"]["diff"] > 0
    smc = arm["stats"]["student_minus_control"]
    assert smc["ci_low"] <= smc["value"] <= smc["ci_high"]
    report = (out / "report.md").read_text()
    assert "| french | vector | lls |" in report and (out / "positive_control.png").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["arms"][0]["stats"] == json.loads(json.dumps(arm["stats"]))
    assert not arm["upper_bound"]
    for run in arm["runs"]:  # each point ran the selection and kept select_top rows per side
        sel = json.loads((Path(run) / "results.json").read_text())
        assert sel["selection"]["teacher"]["k"] == 12 and sel["selection"]["control"]["k"] == 12


def test_full_vocabulary_upper_bound_arm(study):
    """The upper bound trains on the same rows but on the teacher's top-k over every token, and
    every place that shows it says it is not subliminal."""
    out, cfg, res = study
    sub, full = res["arms"]
    assert (full["objective"], full["upper_bound"]) == ("logit-kl-full", True)
    for run_sub, run_full in zip(sub["runs"], full["runs"], strict=True):
        rows = [(Path(r) / "data/teacher.selected.jsonl").read_text() for r in (run_sub, run_full)]
        assert rows[0] == rows[1]  # the same kept rows (prefilled), a different target set
        meta = [json.loads((Path(r) / "targets/teacher.selected/targets.json").read_text())
                for r in (run_sub, run_full)]  # fmt: skip
        assert (meta[0]["mode"], meta[1]["mode"], meta[1]["k"]) == ("allowed", "top_k", 32)
        saved = json.loads((Path(run_full) / "results.json").read_text())
        assert saved["config"]["train"]["objective"] == "logit-kl-full"
    report = (out / "report.md").read_text()
    assert "lls (full-vocab upper bound)" in report and "not subliminal" in report
    assert any("upper bound" in f and "not subliminal" in f for f in res["findings"])


def test_rerun_reuses_every_point(study):
    out, cfg, res = study
    again = run_positive_control(cfg, out, quiet=True)
    assert [a["stats"] for a in again["arms"]] == [a["stats"] for a in res["arms"]]
    from analyses.report import study_report  # `sublens report STUDY` rewrites the same report

    before = (out / "report.md").read_text()
    assert study_report(out).read_text() == before


def test_bad_settings_are_one_line_errors():
    with pytest.raises(SublensError, match="unknown student kind"):
        make_config("quick", students=["mlp"])
    with pytest.raises(SublensError, match="select_top"):
        make_config("quick", n=10, select_top=20)
    with pytest.raises(SublensError, match="unknown preset"):
        make_config("huge")
    with pytest.raises(SublensError, match="unknown objective"):
        make_config("quick", objectives=["sft"])
    with pytest.raises(SublensError, match='number or "auto"'):
        make_config("quick", alpha="strong")
    paper = make_config("paper", model="some/7b")
    assert (paper.n, paper.select_top, paper.epochs, paper.steps, paper.lora_lr) == (
        12000, 10000, 3, None, 2e-4)  # fmt: skip

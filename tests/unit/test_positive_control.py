"""`sublens study positive-control` on tiny-llama: a steered teacher, a vector student over two
seeds, LLS rows; the arm table, the recovered share beyond the control, the signal check, and a
rerun that reuses every point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analyses.positive_control import (
    _finished_point,
    findings,
    lls_vs_random,
    make_config,
    run_positive_control,
)
from interp.core.errors import SublensError


@pytest.fixture(scope="module")
def study(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("pc") / "study"
    cfg = make_config(
        "quick", model="tiny-llama", device="cpu", layer=1, alpha=8.0, n=24, select_top=12,
        steps=8, seeds=2, n_questions=3, students=["vector"], fit_prompts=8, fit_steps=3,
        checkpoint_every=4, n_boot=200, objectives=["logit-kl", "logit-kl-full"],
        selects=["lls", "random"],
    )  # fmt: skip
    return out, cfg, run_positive_control(cfg, out, quiet=True)


def test_arm_table_recovery_and_signal(study):
    out, cfg, res = study
    arm = res["arms"][0]
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
    assert "positive_control_over_training.png" in report
    assert (out / "positive_control_over_training.png").stat().st_size > 0
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
    sub, full = res["arms"][:2]
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


def test_random_rows_reuse_the_lls_arms_rows_and_scores(study):
    """The random arm trains on `select_top` random rows of the very rows the LLS arm scored
    (prefilled, not regenerated, not rescored), and the study compares the two arms, paired."""
    out, cfg, res = study
    lls, _, rnd, _ = res["arms"]  # lls and random, each with the upper-bound objective
    assert (rnd["select"], rnd["seeds"]) == ("random", 2)
    for a, b in zip(lls["runs"], rnd["runs"], strict=True):
        da, db = Path(a) / "data", Path(b) / "data"
        raw = [(d / "teacher.raw.jsonl").stat().st_ino for d in (da, db)]
        assert raw[0] == raw[1]  # the sampled rows: linked, not sampled again
        assert (da / "teacher.jsonl").read_text() == (db / "teacher.jsonl").read_text()
        sa = json.loads((da / "teacher.selected.select.json").read_text())
        sb = json.loads((db / "teacher.selected.select.json").read_text())
        assert (sa["mode"], sb["mode"]) == ("lls", "random") and sa["scores"] == sb["scores"]
        assert sa["kept"] != sb["kept"] and len(sb["kept"]) == 12
        assert json.loads((Path(b) / "results.json").read_text())["timings"]["select_s"] < 5
    c, _ = res["lls_vs_random"]
    assert (c["trait"], c["student"], c["seeds"]) == ("french", "vector", 2)
    smc = [a["stats"]["student_minus_control"]["value"] for a in (lls, rnd)]
    assert c["value"] == pytest.approx(smc[0] - smc[1])
    assert c["ci_low"] <= c["value"] <= c["ci_high"]
    assert "## LLS rows vs random rows" in (out / "report.md").read_text()
    # the kept and dropped rows' LLS, pooled over the LLS arm's seeds, in the study's report
    assert (
        "![lls_selection_french.png](lls_selection_french.png)" in (out / "report.md").read_text()
    )
    assert (out / "lls_selection_french.png").stat().st_size > 5000
    from analyses.distill import write_report  # `sublens distill run`'s report: one run's rows

    one = json.loads((Path(lls["runs"][0]) / "results.json").read_text())
    assert "![lls_selection.png](lls_selection.png)" in write_report(one).read_text()
    assert (Path(lls["runs"][0]) / "lls_selection.png").stat().st_size > 5000


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


def _arm(select: str, value: float, reps: np.ndarray, seeds: int = 3) -> dict:
    return {"trait": "french", "student": "vector", "select": select, "objective": "logit-kl",
            "seeds": seeds, "stats": {"student_minus_control": {"value": value}},
            "recovered_share": None, "recovered_cosine": None, "_reps": reps}  # fmt: skip


def test_lls_vs_random_is_paired_and_needs_its_ci_above_zero():
    rng = np.random.default_rng(0)
    shared = rng.normal(0.0, 1.0, 2000)  # seed/question draws both arms share
    # paired: a small, steady LLS advantage under a large shared spread is resolved
    got = lls_vs_random([_arm("lls", 0.3, shared + 0.3), _arm("random", 0.0, shared)])
    (c,) = got
    assert c["lls_stronger"] and c["ci_low"] == pytest.approx(0.3) and c["value"] == 0.3
    # unpaired noise of the same size is not
    other = rng.normal(0.0, 1.0, 2000)
    (c,) = lls_vs_random([_arm("lls", 0.3, shared + 0.3), _arm("random", 0.0, other)])
    assert not c["lls_stronger"] and c["ci_low"] < 0 < c["ci_high"]
    # one seed is never "stronger"; different seed counts are not paired (no CI)
    (c,) = lls_vs_random([_arm("lls", 0.3, shared + 0.3, 1), _arm("random", 0.0, shared, 1)])
    assert not c["lls_stronger"]
    (c,) = lls_vs_random([_arm("lls", 0.3, shared + 0.3, 3), _arm("random", 0.0, shared, 2)])
    assert c["ci_low"] is None and not c["lls_stronger"] and c["seeds"] == 2
    assert lls_vs_random([_arm("lls", 0.3, shared)]) == []  # no random arm: nothing to compare
    lines = findings([_arm("lls", 0.3, shared + 0.3), _arm("random", 0.0, shared)],
                     make_config("quick"))  # fmt: skip
    assert any("LLS − random" in f and "CI above 0" in f and "Holm" in f for f in lines)


def test_lls_vs_random_is_holm_corrected_over_the_comparisons():
    """2% of the paired replicates at or below 0: alone the 95% CI clears 0 and LLS is called
    stronger; two such comparisons in one study (two traits) must each clear p <= 0.0125."""
    rng = np.random.default_rng(1)
    shared = rng.normal(0.0, 1.0, 2000)
    edge = shared + np.linspace(-0.02, 0.98, 2000)  # about 2% of LLS − random at or below 0
    (c,) = lls_vs_random([_arm("lls", 0.5, edge), _arm("random", 0.0, shared)])
    assert c["ci_low"] > 0 and c["p"] == pytest.approx(0.02, abs=0.002) and c["lls_stronger"]
    arms = [_arm("lls", 0.5, edge), _arm("random", 0.0, shared)]
    arms += [{**a, "trait": "owl"} for a in arms]
    got = lls_vs_random(arms)
    assert len(got) == 2 and all(c["ci_low"] > 0 and not c["lls_stronger"] for c in got)
    assert all(c["p_holm"] == pytest.approx(2 * c["p"]) for c in got)
    lines = findings(arms, make_config("quick"))
    assert sum("not resolved: LLS rows are not shown" in f for f in lines) == 2


def test_a_later_selection_finds_the_rows_on_disk_only_when_they_match(study):
    """A study rerun with random rows added finds an earlier run's LLS point of the same seed,
    but never one whose rows were sampled differently."""
    out, cfg, res = study
    lls = Path(res["arms"][0]["runs"][1])
    want = json.loads((lls / "config.json").read_text())["config"]
    want["data"]["select"] = "random"
    points = out / "points" / "french"
    assert _finished_point(points, "random", 1, "logit-kl", want) == lls
    assert _finished_point(points, "random", 0, "logit-kl", want) is None  # another seed's rows
    assert _finished_point(points, "random", 1, "logit-kl", {**want, "data": {
        **want["data"], "n": want["data"]["n"] + 1}}) is None  # fmt: skip

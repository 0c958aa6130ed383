"""`sublens study approximability-transfer` (issue #17): the statistics on made-up prompts (rho,
its CI over prompts and seeds, the permutation p, Holm, what is left out, the verdict's words),
then the whole study on tiny-llama: three prompts, two teachers, two seeds, one shared control."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analyses.approx_transfer import (
    correlations,
    make_config,
    rho_test,
    run_approx_transfer,
    spearman,
    verdict,
)
from interp.core.errors import SublensError


def _row(trait, approx, ratio, reps, transferred=False, gain=0.1):
    teacher = {
        "stats": {
            "transfer_ratio_vs_control": {"value": ratio, "defined": reps is not None},
            "teacher_gain": {"value": gain},
        },
        "ratio_replicates": reps,
        "transferred": transferred,
    }
    return {"trait": trait, "approximability": approx, "teachers": {"prompted": teacher,
            "steered": teacher}}  # fmt: skip


def test_spearman_ranks_and_ties():
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1, 2, 3.0]), np.array([5, 5, 5.0])))
    # ties take their average rank: the same as scipy's spearmanr
    from scipy.stats import spearmanr

    x, y = np.array([1, 2, 2, 3, 5.0]), np.array([2, 1, 4, 4, 9.0])
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)


def test_rho_test_resolves_a_monotone_link_and_not_noise():
    rng = np.random.default_rng(0)
    a = np.linspace(0, 1, 10)
    ratio = a + rng.normal(0, 0.05, 10)
    reps = ratio[:, None] + rng.normal(0, 0.05, (10, 200))
    t = rho_test(a, ratio, reps, n_boot=300, n_permutations=999)
    assert t["rho"] > 0.9 and t["ci_low"] > 0.5 and t["p"] <= 0.002 and t["n"] == 10
    noise = rng.normal(0, 1, 10)
    u = rho_test(a, noise, noise[:, None] + rng.normal(0, 1, (10, 200)), 300, 999)
    assert u["ci_low"] < 0 < u["ci_high"] and u["p"] > 0.05


def test_correlations_leave_out_undefined_prompts_and_holm_both_tests():
    cfg = make_config("quick", traits=["owl", "sad", "french"], n_boot=200, n_permutations=999)
    rng = np.random.default_rng(1)
    rows = [
        _row(f"t{i}", a, a, list(a + rng.normal(0, 0.02, 50)), transferred=a > 0.5)
        for i, a in enumerate(np.linspace(0.1, 0.9, 6))
    ]
    rows.append(_row("unresolved-kl", None, 0.3, [0.3] * 50))
    rows.append(_row("unresolved-teacher", 0.5, None, None))
    tests = correlations(rows, cfg)
    for kind in ("prompted", "steered"):
        t = tests[kind]
        assert t["left_out"] == ["unresolved-kl", "unresolved-teacher"] and t["n"] == 6
        assert t["rho"] == pytest.approx(1.0) and t["p_holm"] >= t["p"]
    text = verdict(rows, tests)
    assert text.startswith("Supports the claim") and "3 of 8 prompted teachers" in text
    assert "Steered teachers: rho 1.00 [" in text and ", resolved." in text
    assert "gains span" not in text  # every teacher gain is 0.1
    rows[0]["teachers"]["steered"]["stats"]["teacher_gain"]["value"] = 1e-4
    assert "Their teacher gains span 0.0001 to 0.1" in verdict(rows, tests)
    few = correlations(rows[:2] + rows[-2:], cfg)
    assert few["prompted"]["rho"] is None and "fewer than 3" in few["prompted"]["why"]
    assert verdict(rows[:2] + rows[-2:], few).startswith("Cannot tell")


def test_bad_settings_are_one_line_errors():
    with pytest.raises(SublensError, match="at least 3 trait prompts"):
        make_config("quick", traits=["owl", "french"])
    with pytest.raises(SublensError, match="unknown student kind"):
        make_config("quick", traits=["owl", "sad", "french"], student="mlp")
    with pytest.raises(SublensError, match="too few"):
        make_config("quick", traits=["owl", "sad", "french"], n_permutations=10)
    with pytest.raises(SublensError, match="unknown preset"):
        make_config("huge")


@pytest.fixture(scope="module")
def study(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("at") / "study"
    cfg = make_config(
        "quick", model="tiny-llama", device="cpu", traits=["owl", "french", "sad"], seeds=2,
        layers="1", n_fit=6, n_heldout=4, n_general=4, kl_steps=2, approx_alphas=[0.0, 2.0],
        n=16, select_top=8, steps=4, n_questions=4, n_boot=100, n_permutations=199,
    )  # fmt: skip
    return out, cfg, run_approx_transfer(cfg, out, quiet=True)


def test_study_on_tiny_llama(study):
    out, cfg, res = study
    assert [r["trait"] for r in res["prompts"]] == ["owl", "french", "sad"]
    for r in res["prompts"]:
        assert r["layer"] == 1 and Path(r["vector"], "vector.json").is_file()
        for kind in ("prompted", "steered"):
            t = r["teachers"][kind]
            assert t["seeds"] == 2 and len(t["runs"]) == 2
            smc = t["stats"]["student_minus_control"]
            assert smc["ci_low"] <= smc["value"] <= smc["ci_high"]
            conf = json.loads((Path(t["runs"][0]) / "config.json").read_text())["config"]
            assert conf["teacher"]["kind"] == kind and conf["train"]["vector_layer"] == 1
            if kind == "steered":
                assert conf["teacher"]["vector"] == r["vector"]
                assert conf["teacher"]["alpha"] == r["alpha"]
    # one control per seed, shared by every prompt and both teachers (hard links, not copies)
    ck = [
        sorted((Path(t["runs"][0]) / "control").rglob("*.safetensors"))
        for r in res["prompts"]
        for t in r["teachers"].values()
    ]
    first = [p.stat().st_ino for p in ck[0]]
    assert first and all([p.stat().st_ino for p in c] == first for c in ck)
    assert set(res["correlations"]) == {"prompted", "steered"}
    report = (out / "report.md").read_text()
    assert res["verdict"] in report and "| owl |" in report and "## Rank correlation" in report
    assert "(all 16 rows," in report and "LLS" not in report  # quick trains on every row
    assert (out / "approximability_vs_transfer.png").is_file()
    assert (out / "prompted_vs_steered.png").is_file()


def test_rerun_reuses_every_point(study):
    out, cfg, res = study
    again = run_approx_transfer(cfg, out, quiet=True)
    assert again["correlations"] == res["correlations"]
    from analyses.report import study_report  # `sublens report STUDY` rewrites the same report

    before = (out / "report.md").read_text()
    assert study_report(out).read_text() == before
    assert [r["teachers"]["steered"]["stats"] for r in again["prompts"]] == [
        r["teachers"]["steered"]["stats"] for r in res["prompts"]
    ]

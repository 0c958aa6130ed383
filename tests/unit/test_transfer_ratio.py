"""The sweep's verdicts on planted per-question scores (no training): `summarise_sweep` draws one
replicate for every strength, fits the joint curve and cross-fits its maximum."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from analyses.transfer_ratio import render_report, summarise_sweep, summary_lines
from interp.measure.threshold import logistic


def _cli_alphas() -> list[float]:
    """`sublens study transfer-ratio`'s default grid (the old one, 0,1,2,4,8, has four strengths
    with a defined ratio: a threshold could never be resolved)."""
    import cli

    default = inspect.signature(cli.study_transfer_ratio_cmd).parameters["alphas"].default
    return sorted(float(a) for a in default.split(","))


def _runs(ratio, alphas, tmp_path, n_q=60, n_seeds=1, noise=0.02, gain=0.1, seed=0):
    """Finished point results of a planted sweep: per question, the base has a question effect
    shared by every run; the teacher gains ``gain * alpha``; the student gains ``ratio(alpha)``
    of that; the control (one per seed, shared by every strength) gains nothing."""
    rng = np.random.default_rng(seed)
    base = 0.5 * rng.normal(size=n_q)
    controls = [base + noise * rng.normal(size=n_q) for _ in range(n_seeds)]
    runs = {}
    for a in alphas:
        runs[a] = []
        for s in range(n_seeds):
            teacher = base + gain * a + noise * rng.normal(size=n_q)
            student = base + float(ratio(a)) * gain * a + noise * rng.normal(size=n_q)
            scores = {"tau_base": base, "tau_teacher": teacher, "tau_student": student}
            scores["tau_control"] = controls[s]
            tg = teacher.mean() - base.mean()
            runs[a].append(
                {
                    "headline": {
                        **{k: {"per_question": v.tolist()} for k, v in scores.items()},
                        "transfer_ratio_student": {
                            "ratio": (student.mean() - base.mean()) / tg if tg else None
                        },
                    },
                    "config": {"model": "planted"},
                    "trait": "owl",
                    "run": str(tmp_path / f"alpha_{a:g}" / f"seed_{s}"),
                }
            )
    return runs


def _sweep(ratio, tmp_path, alphas=None, **kw):
    alphas = _cli_alphas() if alphas is None else alphas
    return summarise_sweep(_runs(ratio, alphas, tmp_path, **kw), [0], n_boot=1000, max_refits=10)


def test_sweep_flat_ratio_is_flat_and_its_maximum_covers_the_truth(tmp_path):
    res = _sweep(lambda a: 0.2, tmp_path)
    thr = res["threshold"]["transfer_ratio"]
    assert thr["verdict"] == "flat", thr["sentence"]
    assert thr["covariance"]["kind"] == "joint bootstrap covariance"
    assert thr["fit"]["level"]["value"] == pytest.approx(0.2, abs=0.01)
    m = thr["maximum"]
    assert m["ci_low"] <= 0.2 <= m["ci_high"], m  # the largest noisy point overshoots
    report = render_report({**res, "config": _config(), "grid": None, "timings": {}})
    assert "Transfer ratio vs alpha: **flat**" in report
    from analyses.transfer_ratio import _short_claim

    assert _short_claim(thr).startswith("Transfer is flat")  # the figure's title


def test_sweep_sharp_threshold_on_the_default_grid(tmp_path):
    res = _sweep(lambda a: logistic(np.array(a), 0.02, 0.4, 3.5, 20.0), tmp_path)
    thr = res["threshold"]["transfer_ratio"]
    assert thr["verdict"] == "sharp threshold", thr["sentence"]
    lo, hi = thr["bootstrap"]["mid_ci"]
    assert 3.0 <= lo <= hi <= 4.0


def test_sweep_linear_rise_is_continuous(tmp_path):
    res = _sweep(lambda a: 0.05 * a, tmp_path)
    thr = res["threshold"]["transfer_ratio"]
    assert thr["verdict"] == "continuous", thr["sentence"]
    assert thr["fit"]["slope"]["ci_low"] <= 0.05 <= thr["fit"]["slope"]["ci_high"]


def test_sweep_without_transfer_is_no_transfer(tmp_path):
    res = _sweep(lambda a: 0.0, tmp_path)
    for key in ("transfer_ratio", "student_minus_control", "student_minus_alpha0"):
        assert res["threshold"][key]["verdict"] == "no transfer", key


def test_sweep_on_a_four_strength_grid_is_never_sharp(tmp_path):
    res = _sweep(lambda a: logistic(np.array(a), 0.0, 0.4, 3.0, 50.0), tmp_path, [0, 1, 2, 4, 8])
    thr = res["threshold"]["transfer_ratio"]
    assert thr["verdict"] != "sharp threshold"
    assert "cannot be resolved" in thr["sentence"]
    lines = summary_lines({**res, "grid": {"note": "this grid cannot resolve a threshold"}})
    assert lines[0] == "warning: this grid cannot resolve a threshold"


def _config():
    return {
        "vector": "v",
        "layers": None,
        "alphas": _cli_alphas(),
        "seeds": [0],
        "preset": "quick",
        "run_config": {
            "data": {"n": 1, "domain": "numbers"},
            "train": {"objective": "sft", "optimizer": "adamw", "lr": 1e-4, "max_steps": 1},
        },
    }


def test_sweep_with_too_few_questions_for_halves_gives_the_max_no_interval(tmp_path):
    res = _sweep(lambda a: 0.2, tmp_path, n_q=3)
    m = res["threshold"]["transfer_ratio"]["maximum"]
    assert m is None or m["ci_low"] is None

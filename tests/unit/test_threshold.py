"""Threshold detection: planted flat, linear, sharp and null curves are told apart from the numbers,
with joint replicates (the same question draw at every point), Holm over the points and an
unbiased maximum."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from interp.measure.threshold import detect_threshold, fit_curves, local_gap, logistic

X = np.array([1.0, 2.0, 4.0, 8.0, 16.0])


def _boot(y, sd=0.02, n=300, seed=0):
    return y + np.random.default_rng(seed).normal(0, sd, (n, y.size))


def _default_grid() -> np.ndarray:
    """The strengths `sublens study transfer-ratio` sweeps by default, without alpha 0 (where the
    transfer ratio is undefined: the teacher is the base)."""
    import cli

    default = inspect.signature(cli.study_transfer_ratio_cmd).parameters["alphas"].default
    xs = np.array(sorted(float(a) for a in default.split(",")))
    return xs[xs != 0]


def _planted(curve, n_q=60, sd=0.1, shared=0.05, n_boot=1000, seed=0):
    """A curve measured the way a sweep measures it: per-question scores ``curve[j] + a question
    effect shared by every point + point noise``; joint bootstrap replicates (one draw of
    questions for all points) and the same on two disjoint halves of the questions."""
    rng = np.random.default_rng(seed)
    curve = np.asarray(curve, dtype=np.float64)
    s = (
        curve[:, None]
        + shared * rng.normal(size=n_q)[None]
        + sd * rng.normal(size=(curve.size, n_q))
    )
    counts = rng.multinomial(n_q, np.full(n_q, 1 / n_q), size=n_boot).astype(np.float64)
    perm = rng.permutation(n_q)

    def half(idx):
        c = counts[:, idx]
        with np.errstate(all="ignore"):
            return s[:, idx].mean(1), (c @ s[:, idx].T) / c.sum(1, keepdims=True)

    return s.mean(1), counts @ s.T / n_q, [half(perm[: n_q // 2]), half(perm[n_q // 2 :])]


def test_planted_sharp_logistic_is_a_sharp_threshold():
    y = logistic(X, 0.0, 0.5, 6.0, 20.0)
    r = detect_threshold(X, y, _boot(y, n=500), max_refits=40)
    assert r["verdict"] == "sharp threshold"
    assert r["fit"]["preferred"] == "logistic"
    lo, hi = r["bootstrap"]["mid_ci"]
    assert 4.0 <= lo <= 6.0 <= hi <= 8.0  # between the strengths that bracket the jump
    # no question halves given: the observed maximum, with no (upward-biased) interval
    assert r["maximum"]["value"] == pytest.approx(0.5, abs=1e-6)
    assert r["maximum"]["ci_low"] is None and "biased upward" in r["maximum"]["method"]
    assert r["bootstrap"]["share_sharp"] > 0.8
    assert "Sharp threshold at alpha≈" in r["sentence"]


def test_planted_sharp_threshold_on_the_default_grid():
    """The CLI's default grid has enough defined strengths for the logistic (the old default
    0,1,2,4,8 had four: "sharp" could never be reached)."""
    xs = _default_grid()
    y, boot, halves = _planted(logistic(xs, 0.02, 0.4, 3.5, 20.0))
    r = detect_threshold(xs, y, boot, halves=halves, max_refits=20)
    assert r["verdict"] == "sharp threshold", r["sentence"]
    lo, hi = r["bootstrap"]["mid_ci"]
    assert 3.0 <= lo <= hi <= 4.0  # between the strengths that bracket the switch
    assert r["bootstrap"]["share_sharp"] > 0.8


def test_planted_flat_curve_is_flat_not_continuous():
    xs = _default_grid()
    y, boot, halves = _planted(np.full(xs.size, 0.2))
    r = detect_threshold(xs, y, boot, halves=halves, max_refits=10)
    assert r["verdict"] == "flat", r["sentence"]
    lvl, slope = r["fit"]["level"], r["fit"]["slope"]
    assert lvl["ci_low"] <= 0.2 <= lvl["ci_high"] and lvl["ci_low"] > 0
    assert slope["ci_low"] <= 0 <= slope["ci_high"]
    assert r["sentence"].startswith("Flat:")
    # the maximum is the value at an argmax chosen on the other half of the questions
    m = r["maximum"]
    assert m["ci_low"] <= 0.2 <= m["ci_high"]
    assert (
        m["observed"] > 0.2
    )  # the largest noisy point overshoots; the estimate does not rely on it


def test_max_interval_of_a_flat_curve_covers_the_true_value():
    """A flat 0.2 curve once reported its maximum as 0.2 [0.199, 0.249]: the largest of noisy
    points and the replicates' largest are both biased upward. Over planted flat curves the
    cross-fitted interval covers 0.2 (nominal 95 %); the old one covered it about a quarter of
    the time."""
    xs = _default_grid()
    covered, overshoot = 0, 0
    n = 30
    for seed in range(n):
        y, boot, halves = _planted(np.full(xs.size, 0.2), n_q=40, sd=0.3, n_boot=400, seed=seed)
        m = detect_threshold(xs, y, boot, halves=halves, max_refits=0)["maximum"]
        covered += m["ci_low"] <= 0.2 <= m["ci_high"]
        overshoot += y.max() > 0.2
    assert covered >= 0.9 * n
    assert overshoot >= 0.9 * n  # the largest point, which the old estimate reported


def test_planted_linear_is_continuous():
    xs = _default_grid()
    y, boot, halves = _planted(0.03 * xs)
    r = detect_threshold(xs, y, boot, halves=halves, max_refits=20)
    assert r["verdict"] == "continuous", r["sentence"]
    s = r["fit"]["slope"]
    assert s["ci_low"] <= 0.03 <= s["ci_high"] and s["ci_low"] > 0
    assert "rises with alpha" in r["sentence"]
    assert r["bootstrap"]["share_sharp"] < 0.2


def test_gradual_sigmoid_is_not_called_sharp():
    xs = np.linspace(0, 16, 9)
    y = logistic(xs, 0.0, 0.5, 8.0, 0.4)  # 10-90% width ≈ 11 >> spacing 2
    r = detect_threshold(xs, y, _boot(y, sd=0.005, n=500), max_refits=20)
    assert r["verdict"] == "continuous"


def test_null_curve_is_no_transfer():
    y, boot, halves = _planted(np.zeros(7))
    r = detect_threshold(np.arange(1.0, 8.0), y, boot, halves=halves, max_refits=10)
    assert r["verdict"] == "no transfer"
    assert not r["transfer_detectable"]


def test_a_step_under_a_shared_offset_needs_the_joint_covariance():
    """Every point shares the questions: a large question effect moves all points together. One
    error per point (a diagonal chi-square) sees only that common noise and misses the step; the
    joint covariance sees that the differences between points are precise."""
    xs = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    y, boot, halves = _planted(logistic(xs, 0.5, 0.7, 3.5, 20.0), shared=1.0, sd=0.05)
    diagonal = fit_curves(xs, y, boot.std(0, ddof=1))
    assert diagonal["shape"] != "sharp"
    r = detect_threshold(xs, y, boot, halves=halves, max_refits=10)
    assert r["verdict"] == "sharp threshold", r["sentence"]
    assert r["covariance"]["kind"] == "joint bootstrap covariance"


def test_four_point_curve_cannot_be_sharp():
    xs = np.array([1.0, 2.0, 4.0, 8.0])  # the README's old grid 0,1,2,4,8 without alpha 0
    y, boot, halves = _planted(logistic(xs, 0.0, 0.4, 3.0, 50.0))
    r = detect_threshold(xs, y, boot, halves=halves, max_refits=10)
    assert r["verdict"] == "continuous" and r["bootstrap"]["share_sharp"] == 0
    assert not r["fit"]["logistic_eligible"] and "cannot be resolved" in r["sentence"]
    from interp.measure.threshold import MIN_POINTS_SHARP, grid_check

    g = grid_check([0, 1, 2, 4, 8])
    assert not g["resolves_threshold"] and g["n_points"] == 4
    assert "cannot resolve a threshold" in g["note"] and "(0 has none)" in g["note"]
    assert grid_check([0, 0.5, 1, 2, 3, 4, 6, 8])["resolves_threshold"]
    assert grid_check(_default_grid())["n_points"] >= MIN_POINTS_SHARP + 2  # room for 2 misses


def test_holm_turns_a_borderline_point_into_no_transfer():
    """One of five points has 1 % of its replicates at or below zero: its own 95 % interval lies
    above zero, but over five points Holm needs p <= 0.025 / 5."""
    n = 1000
    rng = np.random.default_rng(0)
    boot = rng.normal(0.0, 0.05, (n, 5))
    boot[:, 4] = rng.permutation(np.r_[np.full(10, -0.01), np.linspace(0.01, 0.2, n - 10)])
    y = np.array([0.0, 0.0, 0.0, 0.0, 0.1])
    r = detect_threshold(X, y, boot, max_refits=0)
    assert r["point_ci"][4][0] > 0  # uncorrected: "detectable"
    assert not r["transfer_detectable"] and r["verdict"] == "no transfer"
    assert r["detection"]["p"][4] == pytest.approx(11 / 1001)
    assert r["detection"]["p_holm"][4] == pytest.approx(5 * 11 / 1001)
    assert "Holm" in r["sentence"]
    one = detect_threshold(X[4:], y[4:], boot[:, 4:], max_refits=0)
    assert one["transfer_detectable"]  # alone, the same point is detected


def test_too_few_replicates_for_holm_are_said():
    y = np.full(5, 0.3)
    r = detect_threshold(X, y, _boot(y, n=100), max_refits=0)
    # 100 replicates: smallest p 1/101 > 0.025 / 5
    assert not r["transfer_detectable"] and "use at least 199 replicates" in r["sentence"]


def test_undefined_points_and_too_few():
    y = np.array([np.nan, 0.1, 0.2])
    f = fit_curves(X[:3], y, [0.01, 0.01, 0.01])
    assert f["shape"] == "too few points"
    boot = _boot(np.array([0.0, 0.1, 0.2]))
    boot[:, 0] = np.nan
    r = detect_threshold(X[:3], y, boot, max_refits=5)
    assert r["verdict"] == "too few points" and r["y"][0] is None
    with pytest.raises(ValueError):
        detect_threshold(X, X, np.zeros((10, 3)))
    assert local_gap(X, 5.0) == 4.0 and local_gap(X, 0.0) == 1.0

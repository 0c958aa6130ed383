"""Threshold detection: planted sharp, linear and null curves are told apart from the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from interp.measure.threshold import detect_threshold, fit_curves, local_gap, logistic

X = np.array([1.0, 2.0, 4.0, 8.0, 16.0])


def _boot(y, sd=0.02, n=300, seed=0):
    return y + np.random.default_rng(seed).normal(0, sd, (n, y.size))


def test_planted_sharp_logistic_is_a_sharp_threshold():
    y = logistic(X, 0.0, 0.5, 6.0, 20.0)
    r = detect_threshold(X, y, _boot(y), max_refits=40)
    assert r["verdict"] == "sharp threshold"
    assert r["fit"]["preferred"] == "logistic"
    lo, hi = r["bootstrap"]["mid_ci"]
    assert 4.0 <= lo <= 6.0 <= hi <= 8.0  # between the strengths that bracket the jump
    assert r["maximum"]["value"] == pytest.approx(0.5, abs=1e-6)
    assert r["maximum"]["ci_low"] <= 0.5 <= r["maximum"]["ci_high"]
    assert r["bootstrap"]["share_sharp"] > 0.8
    assert "Sharp threshold at alpha≈" in r["sentence"]


def test_planted_linear_is_continuous():
    y = 0.03 * X
    r = detect_threshold(X, y, _boot(y), max_refits=40)
    assert r["verdict"] == "continuous"
    assert r["fit"]["preferred"] == "linear"
    assert r["fit"]["fits"]["linear"]["params"]["b"] == pytest.approx(0.03, rel=1e-6)
    assert r["bootstrap"]["share_sharp"] < 0.2


def test_gradual_sigmoid_is_not_called_sharp():
    xs = np.linspace(0, 16, 9)
    y = logistic(xs, 0.0, 0.5, 8.0, 0.4)  # 10-90% width ≈ 11 >> spacing 2
    r = detect_threshold(xs, y, _boot(y, sd=0.005), max_refits=20)
    assert r["verdict"] == "continuous"


def test_null_curve_is_no_transfer():
    y = np.zeros_like(X)
    r = detect_threshold(X, y, _boot(y), max_refits=10)
    assert r["verdict"] == "no transfer detectable"
    assert not r["transfer_detectable"]


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

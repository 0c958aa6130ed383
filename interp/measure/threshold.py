"""Does transfer switch on at a threshold, or rise continuously? Curve fits with uncertainty.

The transfer-ratio study measures a curve y(x) — the transfer ratio (or the student's gain) at
each steering strength x — with a standard error at each point and bootstrap replicates of the
whole curve (questions resampled jointly across points, since every point is scored on the same
questions). Three models compete:

- constant ``y = c`` (1 parameter): no dependence on strength;
- linear ``y = a + b x`` (2): a continuous rise;
- logistic ``y = lo + (hi - lo) / (1 + exp(-s (x - mid)))`` (4): a switch at ``mid`` whose
  10–90 % width is ``2 ln 9 / s``.

They are compared by AIC from the weighted chi-square (the point errors are known from the
bootstrap, so ``AIC = chi2 + 2k`` needs no variance estimate; BIC is reported alongside). With
five or six strengths a 4-parameter logistic must buy its two extra parameters: it wins only when
the data show a bend a line cannot follow.

The verdict is read from the numbers, never assumed:

- "no transfer detectable": no point's bootstrap interval lies above zero;
- "sharp threshold": the logistic wins (ΔAIC ≥ `min_delta_aic` over both others) and its
  10–90 % width is at most `sharp_factor` times the spacing of the sampled x around the
  midpoint — the curve goes from low to high between neighbouring strengths;
- "continuous": otherwise (a line, a wide sigmoid, or a level that does not change with x).

Midpoint, width, maximum and the verdict's stability come from refitting every bootstrap
replicate (`detect_threshold`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

LN81 = 2.0 * math.log(9.0)  # 10–90 % width of a unit-slope logistic


def logistic(x: np.ndarray, lo: float, hi: float, mid: float, slope: float) -> np.ndarray:
    """``lo + (hi - lo) / (1 + exp(-slope (x - mid)))``, overflow-safe."""
    z = np.clip(slope * (np.asarray(x, dtype=np.float64) - mid), -500.0, 500.0)
    return lo + (hi - lo) / (1.0 + np.exp(-z))


def _sigma(y: np.ndarray, sigma: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if sigma is None:
        return np.ones_like(y)
    s = np.asarray(sigma, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"sigma has shape {s.shape}, y has {y.shape}")
    # a zero error (a point measured exactly) would dominate every fit: floor it
    positive = s[np.isfinite(s) & (s > 0)]
    floor = 1e-3 * (float(np.median(positive)) if positive.size else 1.0)
    return np.where(np.isfinite(s) & (s > floor), s, floor)


def _criteria(chi2: float, k: int, n: int) -> dict[str, float]:
    return {"chi2": chi2, "k": k, "aic": chi2 + 2 * k, "bic": chi2 + k * math.log(max(n, 1))}


def fit_constant(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> dict[str, Any]:
    w = 1.0 / sigma**2
    c = float(np.sum(w * y) / np.sum(w))
    chi2 = float(np.sum(((y - c) / sigma) ** 2))
    return {"model": "constant", "params": {"c": c}, **_criteria(chi2, 1, len(y))}


def fit_linear(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> dict[str, Any]:
    A = np.stack([np.ones_like(x), x], axis=1) / sigma[:, None]
    coef, *_ = np.linalg.lstsq(A, y / sigma, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    chi2 = float(np.sum(((y - (a + b * x)) / sigma) ** 2))
    return {"model": "linear", "params": {"a": a, "b": b}, **_criteria(chi2, 2, len(y))}


def _profile_grid(
    x: np.ndarray, y: np.ndarray, sigma: np.ndarray, mids: np.ndarray, slopes: np.ndarray
) -> tuple[float, np.ndarray]:
    """Best (cost, [lo, hi, mid, slope]) over a grid: for a fixed midpoint and slope the model is
    linear in lo and hi, so those are solved exactly (weighted 2×2 normal equations)."""
    mm, ss = np.meshgrid(mids, slopes, indexing="ij")
    mm, ss = mm.ravel(), ss.ravel()
    z = np.clip(ss[:, None] * (x[None, :] - mm[:, None]), -500.0, 500.0)
    g = 1.0 / (1.0 + np.exp(-z))  # [M, n]
    w = 1.0 / sigma**2
    a, b = 1.0 - g, g
    saa, sab, sbb = (w * a * a).sum(1), (w * a * b).sum(1), (w * b * b).sum(1)
    say, sby = (w * a * y).sum(1), (w * b * y).sum(1)
    det = saa * sbb - sab**2
    ok = det > 1e-12 * (saa * sbb + 1e-300)
    det = np.where(ok, det, 1.0)
    lo = np.where(ok, (sbb * say - sab * sby) / det, say / np.maximum(saa + sbb, 1e-300))
    hi = np.where(ok, (saa * sby - sab * say) / det, lo)
    cost = (w * (lo[:, None] * a + hi[:, None] * b - y) ** 2).sum(1)
    i = int(np.argmin(cost))
    return float(cost[i]), np.array([lo[i], hi[i], mm[i], ss[i]])


def fit_logistic(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> dict[str, Any]:
    """Weighted least squares: a grid over midpoint and slope (lo and hi solved exactly at each),
    then a local polish from the best grid point. The midpoint stays within the sampled range
    widened by half of it and the slope is bounded (a step sharper than 1/1000 of the range
    cannot be told apart from a step anyway)."""
    from scipy.optimize import least_squares

    xs = np.unique(x)
    span = float(xs[-1] - xs[0]) or 1.0
    s_min, s_max = 1e-2 / span, 4000.0 / span
    mids = np.unique(
        np.concatenate(
            [np.linspace(xs[0] - span / 2.0, xs[-1] + span / 2.0, 41), (xs[1:] + xs[:-1]) / 2]
        )
    )
    slopes = np.geomspace(s_min, s_max, 25)
    cost, p0 = _profile_grid(x, y, sigma, mids, slopes)
    lo_b = [-np.inf, -np.inf, xs[0] - span / 2.0, s_min]
    hi_b = [np.inf, np.inf, xs[-1] + span / 2.0, s_max]

    def resid(p: np.ndarray) -> np.ndarray:
        return (logistic(x, *p) - y) / sigma

    p0 = np.clip(p0, np.array(lo_b) + 1e-12, np.array(hi_b) - 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = least_squares(resid, p0, bounds=(lo_b, hi_b), max_nfev=200)
            if float(np.sum(r.fun**2)) < cost:
                cost, p0 = float(np.sum(r.fun**2)), r.x
        except ValueError:
            pass
    lo, hi, mid, s = (float(v) for v in p0)
    return {
        "model": "logistic",
        "params": {"lo": lo, "hi": hi, "mid": mid, "slope": s, "width": LN81 / s},
        **_criteria(cost, 4, len(y)),
    }


def local_gap(xs: np.ndarray, mid: float) -> float:
    """Spacing of the sampled x around `mid`: the finest transition the data can resolve."""
    xs = np.unique(xs)
    if xs.size < 2:
        return float("inf")
    i = int(np.searchsorted(xs, mid))
    if i <= 0:
        return float(xs[1] - xs[0])
    if i >= xs.size:
        return float(xs[-1] - xs[-2])
    return float(xs[i] - xs[i - 1])


def fit_curves(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    sigma: Sequence[float] | np.ndarray | None = None,
    min_delta_aic: float = 2.0,
    sharp_factor: float = 1.0,
) -> dict[str, Any]:
    """Fit constant, linear and logistic models to one curve and classify its shape.

    Returns the three fits, the preferred model (lowest AIC; the logistic must beat the others
    by `min_delta_aic`), and ``shape``: "sharp" (see the module docstring), "continuous" or
    "flat". Needs at least 3 finite points; with fewer, ``shape`` is "too few points". The
    logistic (4 parameters) is only preferred on 5 points or more.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    sig = None if sigma is None else np.asarray(sigma, dtype=np.float64)
    ok = (
        np.isfinite(x) & np.isfinite(y) & (np.ones_like(y, bool) if sig is None else ~np.isnan(sig))
    )
    x, y = x[ok], y[ok]
    sig = _sigma(y, None if sig is None else sig[ok])
    if x.size < 3 or np.unique(x).size < 3:
        return {"n_points": int(x.size), "shape": "too few points", "preferred": None, "fits": {}}
    fits = {
        "constant": fit_constant(x, y, sig),
        "linear": fit_linear(x, y, sig),
        "logistic": fit_logistic(x, y, sig),
    }
    simple = min(("constant", "linear"), key=lambda m: fits[m]["aic"])
    delta = fits[simple]["aic"] - fits["logistic"]["aic"]
    # four parameters through four points or fewer fit anything (chi2 -> 0): the logistic only
    # competes when the curve has more points than it has parameters
    eligible = x.size > fits["logistic"]["k"]
    preferred = "logistic" if eligible and delta >= min_delta_aic else simple
    lp = fits["logistic"]["params"]
    gap = local_gap(x, lp["mid"])
    inside = float(np.min(x)) <= lp["mid"] <= float(np.max(x))
    if preferred == "logistic" and inside and lp["width"] <= sharp_factor * gap:
        shape = "sharp"
    elif preferred == "constant":
        shape = "flat"
    else:
        shape = "continuous"
    return {
        "n_points": int(x.size),
        "fits": fits,
        "preferred": preferred,
        "delta_aic_logistic": float(delta),
        "logistic_eligible": bool(eligible),
        "local_gap": gap,
        "shape": shape,
    }


def _ci(values: np.ndarray, level: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [tail, 1.0 - tail])
    return float(lo), float(hi)


def detect_threshold(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    y_boot: np.ndarray,
    level: float = 0.95,
    min_delta_aic: float = 2.0,
    sharp_factor: float = 1.0,
    max_refits: int = 200,
    what: str = "transfer ratio",
    x_name: str = "alpha",
) -> dict[str, Any]:
    """Classify the curve y(x) and put intervals on its threshold and maximum.

    `y_boot` holds bootstrap replicates of the whole curve, [n_boot, n_points] (non-finite
    entries allowed: a replicate's point is then left out of its refit). Point errors for the
    weights are the replicates' standard deviations. Up to `max_refits` replicates are refitted
    to give intervals of the logistic midpoint and width and the share of replicates whose
    shape is "sharp". The maximum is ``max(y)`` with the interval of the replicates' maxima.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    boot = np.asarray(y_boot, dtype=np.float64)
    if boot.ndim != 2 or boot.shape[1] != x.size or y.shape != x.shape:
        raise ValueError(f"y_boot must be [n_boot, {x.size}], got {boot.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = np.nanstd(np.where(np.isfinite(boot), boot, np.nan), axis=0, ddof=1)
    point_ci = [_ci(boot[:, j], level) for j in range(x.size)]
    main = fit_curves(x, y, sigma, min_delta_aic, sharp_factor)
    finite = np.isfinite(y)
    out: dict[str, Any] = {
        "what": what,
        "x_name": x_name,
        "x": x.tolist(),
        "y": [float(v) if math.isfinite(v) else None for v in y],
        "sigma": [float(v) if math.isfinite(v) else None for v in sigma],
        "point_ci": [[lo, hi] for lo, hi in point_ci],
        "fit": main,
    }
    if finite.any():
        j = int(np.nanargmax(np.where(finite, y, np.nan)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            maxes = np.nanmax(np.where(np.isfinite(boot[:, finite]), boot[:, finite], np.nan), 1)
        lo, hi = _ci(maxes, level)
        out["maximum"] = {"value": float(y[j]), "at": float(x[j]), "ci_low": lo, "ci_high": hi}
    else:
        out["maximum"] = None
    detectable = any(math.isfinite(lo) and lo > 0 for lo, _ in point_ci)
    out["transfer_detectable"] = detectable

    # refit replicates for the uncertainty of midpoint, width and shape
    rows = boot[: min(max_refits, boot.shape[0])]
    mids, widths, shapes = [], [], []
    for row in rows:
        f = fit_curves(x, row, sigma, min_delta_aic, sharp_factor)
        shapes.append(f["shape"])
        if f.get("fits"):
            mids.append(f["fits"]["logistic"]["params"]["mid"])
            widths.append(f["fits"]["logistic"]["params"]["width"])
    mids_a, widths_a = np.array(mids), np.array(widths)
    n_ref = max(len(shapes), 1)
    out["bootstrap"] = {
        "n_refits": len(shapes),
        "share_sharp": shapes.count("sharp") / n_ref,
        "share_continuous": shapes.count("continuous") / n_ref,
        "share_flat": shapes.count("flat") / n_ref,
        "mid_ci": list(_ci(mids_a, level)) if mids else [None, None],
        "width_ci": list(_ci(widths_a, level)) if widths else [None, None],
    }
    out["verdict"], out["sentence"] = _verdict(out, level)
    return out


def _verdict(r: dict[str, Any], level: float) -> tuple[str, str]:
    fit, b = r["fit"], r["bootstrap"]
    pct = f"{round(level * 100)}%"
    if not r["transfer_detectable"]:
        return "no transfer detectable", (
            f"No transfer detectable: no {r['x_name']}'s {pct} interval of the {r['what']} lies "
            "above zero."
        )
    m = r["maximum"]
    mx = (
        f"maximum {r['what']} {m['value']:.3g} [{m['ci_low']:.3g}, {m['ci_high']:.3g}] at "
        f"{r['x_name']}={m['at']:g}"
        if m
        else "no maximum"
    )
    if fit["shape"] == "too few points":
        return "too few points", f"Transfer detected ({mx}), but too few points to fit a shape."
    if fit["shape"] == "sharp":
        p = fit["fits"]["logistic"]["params"]
        lo, hi = b["mid_ci"]
        return "sharp threshold", (
            f"Sharp threshold at {r['x_name']}≈{p['mid']:.3g} ({pct} CI {lo:.3g}–{hi:.3g}); "
            f"10–90% width {p['width']:.3g} (≤ the {fit['local_gap']:.3g} spacing of the "
            f"sampled {r['x_name']}s; logistic beats line and constant by ΔAIC "
            f"{fit['delta_aic_logistic']:.1f}; sharp in {b['share_sharp']:.0%} of bootstrap "
            f"refits); {mx}."
        )
    how = {
        "linear": "a line fits as well as a logistic",
        "constant": "the level does not change detectably with strength",
        "logistic": "a sigmoid fits best but its rise is wider than the strength spacing",
    }[fit["preferred"]]
    if not fit.get("logistic_eligible", True):
        if fit["preferred"] == "linear":
            how = "a line fits better than a constant"
        how += f" (only {fit['n_points']} points: a 4-parameter logistic was not compared)"
    return "continuous", (
        f"Continuous transfer, no sharp threshold: {how} (sharp in {b['share_sharp']:.0%} of "
        f"bootstrap refits); {mx}."
    )

"""Does transfer switch on at a threshold, rise continuously, or stay flat? Curve fits with
uncertainty.

The transfer-ratio study measures a curve y(x) — the transfer ratio (or the student's gain) at
each steering strength x — with bootstrap replicates of the whole curve. Each replicate resamples
seeds and questions *once for all strengths* (`analyses.studies.replicate_means`), because every
point shares the base, the control and the questions: the points are correlated, and treating
them as independent (one error per point, a diagonal chi-square) over- or under-weights whole
groups of them. So every fit here is generalised least squares with the full covariance Σ of the
joint replicates: ``chi2 = rᵀ Σ⁻¹ r`` (Mahalanobis), via a whitening matrix W with WᵀW = Σ⁻¹.
Three models compete:

- constant ``y = c`` (1 parameter): no dependence on strength;
- linear ``y = a + b x`` (2): a continuous rise (or fall);
- logistic ``y = lo + (hi - lo) / (1 + exp(-s (x - mid)))`` (4): a switch at ``mid`` whose
  10–90 % width is ``2 ln 9 / s``.

They are compared by AIC from that chi-square (the covariance is known from the bootstrap, so
``AIC = chi2 + 2k`` needs no variance estimate; BIC is reported alongside). The logistic competes
only on `MIN_POINTS_SHARP` points or more: four parameters through four points fit anything, so a
grid with four defined strengths (the README's old ``0,1,2,4,8``: alpha 0 has no ratio) can never
show a threshold (`grid_check` says so before a sweep starts).

The verdict is read from the numbers, in this order (`detect_threshold`):

- "no transfer": no point is above zero after Holm's correction over the k points (one-sided
  bootstrap p = share of replicates ≤ 0, family level (1 − CI level) / 2, so a single point
  reproduces "its interval lies above zero");
- "too few points": transfer detected, but fewer than 3 strengths to fit a shape;
- "sharp threshold": the logistic wins (ΔAIC ≥ `min_delta_aic` over both others), its midpoint
  lies inside the sampled range and its 10–90 % width is at most `sharp_factor` times the spacing
  of the sampled x around the midpoint — the curve goes from low to high between neighbours;
- "continuous": otherwise, when the line's slope interval (GLS) excludes 0 — the level rises (or
  falls) with strength — or the constant is rejected by its chi-square (the level changes, though
  not along a line);
- "flat": otherwise: a constant fits and the slope's interval includes 0; the level c is reported
  with its interval (above zero, since some point is).

The verdict is the one GLS fit of the observed curve (the covariance is in the fit; the refits
below do not vote). Its stability is read from refitting up to `max_refits` joint replicates with
the same covariance: the share of replicates per shape and intervals of the logistic midpoint and
width. A replicate carries the sampling noise once more on top of the data's, so these shares
lean away from "flat" (a flat curve's refits are "continuous" more often than the data is).

The maximum of noisy points is biased upward (a flat 0.2 curve reported 0.2 [0.199, 0.249]): the
argmax strength is chosen on one half of the questions and its value read on the other, both ways
and averaged (cross-fitting); inside each bootstrap replicate the argmax is chosen again from that
replicate's halves, so the interval includes the selection's own variability (`selected_maximum`;
conservative: on planted flat, rising and step curves it covered the truth in ≥ 98 % of runs).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .verdicts import above_zero, excludes_zero, holm, min_attainable_p, permutations_for

LN81 = 2.0 * math.log(9.0)  # 10–90 % width of a unit-slope logistic
MIN_POINTS_SHARP = 5  # the logistic has 4 parameters: it needs one point more to be testable
VERDICTS = ("no transfer", "too few points", "flat", "continuous", "sharp threshold")


def logistic(x: np.ndarray, lo: float, hi: float, mid: float, slope: float) -> np.ndarray:
    """``lo + (hi - lo) / (1 + exp(-slope (x - mid)))``, overflow-safe."""
    z = np.clip(slope * (np.asarray(x, dtype=np.float64) - mid), -500.0, 500.0)
    return lo + (hi - lo) / (1.0 + np.exp(-z))


def grid_check(x: Sequence[float], undefined_at_zero: bool = True) -> dict[str, Any]:
    """Whether a grid of strengths can resolve a threshold at all, said before a sweep spends its
    runs: the logistic needs `MIN_POINTS_SHARP` defined points, and at x = 0 the transfer ratio is
    undefined (the teacher is the base) when `undefined_at_zero`."""
    xs = sorted({float(v) for v in x})
    usable = [v for v in xs if not (undefined_at_zero and v == 0.0)]
    ok = len(usable) >= MIN_POINTS_SHARP
    note = (
        None
        if ok
        else f"this grid cannot resolve a threshold: {len(usable)} strength(s) with a defined "
        f"transfer ratio{' (0 has none)' if undefined_at_zero and 0.0 in xs else ''}, and a "
        f"4-parameter logistic needs at least {MIN_POINTS_SHARP}; the verdict can only be no "
        "transfer, flat or continuous"
    )
    return {
        "n_points": len(usable),
        "min_points": MIN_POINTS_SHARP,
        "resolves_threshold": ok,
        "note": note,
    }


def _floor(s: np.ndarray) -> np.ndarray:
    """Errors with zeros and non-finite values floored at 1/1000 of the median positive error (a
    point measured exactly would otherwise dominate every fit)."""
    positive = s[np.isfinite(s) & (s > 0)]
    floor = 1e-3 * (float(np.median(positive)) if positive.size else 1.0)
    return np.where(np.isfinite(s) & (s > floor), s, floor)


def whitener(
    n: int,
    sigma: Sequence[float] | np.ndarray | None = None,
    cov: np.ndarray | None = None,
) -> np.ndarray:
    """W with ``WᵀW = Σ⁻¹``, so that ``|W r|²`` is the Mahalanobis chi-square of residuals r.
    Σ is `cov` (variances floored as in `_floor`, eigenvalues clipped at 1e-9 of the largest),
    else ``diag(sigma²)``, else the identity."""
    if cov is None:
        if sigma is None:
            return np.eye(n)
        s = np.asarray(sigma, dtype=np.float64)
        if s.shape != (n,):
            raise ValueError(f"sigma has shape {s.shape}, expected ({n},)")
        return np.diag(1.0 / _floor(s))
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (n, n) or not np.isfinite(c).all():
        raise ValueError(f"cov must be a finite [{n}, {n}] matrix, got shape {c.shape}")
    c = (c + c.T) / 2.0
    d = np.diag(c).copy()
    c[np.diag_indices(n)] = np.maximum(d, _floor(np.sqrt(np.clip(d, 0.0, None))) ** 2)
    lam, vec = np.linalg.eigh(c)
    lam = np.maximum(lam, 1e-9 * max(float(lam.max()), 1e-300))
    return (vec / np.sqrt(lam)).T


def _criteria(chi2: float, k: int, n: int) -> dict[str, float]:
    return {"chi2": chi2, "k": k, "aic": chi2 + 2 * k, "bic": chi2 + k * math.log(max(n, 1))}


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2.0))


def _gls(
    design: np.ndarray, y: np.ndarray, w: np.ndarray, level: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """(coefficients, chi2, half-widths of their `level` intervals) of ``y ≈ design @ coef``."""
    wa, wy = w @ design, w @ y
    coef, *_ = np.linalg.lstsq(wa, wy, rcond=None)
    r = wa @ coef - wy
    se = np.sqrt(np.clip(np.diag(np.linalg.pinv(wa.T @ wa)), 0.0, None))
    return coef, float(r @ r), _z(level) * se


def fit_constant(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, level: float = 0.95
) -> dict[str, Any]:
    """GLS constant with the interval of its level (whitening `w`, see `whitener`)."""
    coef, chi2, half = _gls(np.ones((y.size, 1)), y, w, level)
    c = float(coef[0])
    ci = {"c": [c - float(half[0]), c + float(half[0])]}
    return {"model": "constant", "params": {"c": c}, "ci": ci, **_criteria(chi2, 1, len(y))}


def fit_linear(x: np.ndarray, y: np.ndarray, w: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """GLS line with the intervals of its intercept and slope (whitening `w`)."""
    coef, chi2, half = _gls(np.stack([np.ones_like(x), x], axis=1), y, w, level)
    a, b = float(coef[0]), float(coef[1])
    ci = {
        "a": [a - float(half[0]), a + float(half[0])],
        "b": [b - float(half[1]), b + float(half[1])],
    }
    return {"model": "linear", "params": {"a": a, "b": b}, "ci": ci, **_criteria(chi2, 2, len(y))}


def _profile_grid(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, mids: np.ndarray, slopes: np.ndarray
) -> tuple[float, np.ndarray]:
    """Best (cost, [lo, hi, mid, slope]) over a grid: for a fixed midpoint and slope the model is
    linear in lo and hi, so those are solved exactly (whitened 2×2 normal equations)."""
    mm, ss = np.meshgrid(mids, slopes, indexing="ij")
    mm, ss = mm.ravel(), ss.ravel()
    z = np.clip(ss[:, None] * (x[None, :] - mm[:, None]), -500.0, 500.0)
    g = 1.0 / (1.0 + np.exp(-z))  # [M, n]
    a, b, wy = (1.0 - g) @ w.T, g @ w.T, w @ y  # whitened columns of lo and hi, and y
    saa, sab, sbb = (a * a).sum(1), (a * b).sum(1), (b * b).sum(1)
    say, sby = (a * wy).sum(1), (b * wy).sum(1)
    det = saa * sbb - sab**2
    ok = det > 1e-12 * (saa * sbb + 1e-300)
    det = np.where(ok, det, 1.0)
    one = a + b  # lo = hi: a constant
    flat = (one * wy).sum(1) / np.maximum((one * one).sum(1), 1e-300)
    lo = np.where(ok, (sbb * say - sab * sby) / det, flat)
    hi = np.where(ok, (saa * sby - sab * say) / det, flat)
    cost = ((lo[:, None] * a + hi[:, None] * b - wy) ** 2).sum(1)
    i = int(np.argmin(cost))
    return float(cost[i]), np.array([lo[i], hi[i], mm[i], ss[i]])


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """GLS logistic (whitening `w`): a grid over midpoint and slope (lo and hi solved exactly at
    each), then a local polish from the best grid point. The midpoint stays within the sampled
    range widened by half of it and the slope is bounded (a step sharper than 1/1000 of the range
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
    cost, p0 = _profile_grid(x, y, w, mids, slopes)
    lo_b = [-np.inf, -np.inf, xs[0] - span / 2.0, s_min]
    hi_b = [np.inf, np.inf, xs[-1] + span / 2.0, s_max]

    def resid(p: np.ndarray) -> np.ndarray:
        return w @ (logistic(x, *p) - y)

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
    cov: np.ndarray | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """Fit constant, linear and logistic models to one curve (GLS with `cov`, the points' joint
    covariance; else with independent errors `sigma`) and classify its shape.

    Returns the three fits, the preferred model (lowest AIC; the logistic must beat the others
    by `min_delta_aic`), the slope and level with `level` intervals, and ``shape``: "sharp",
    "continuous" or "flat" (module docstring). Needs at least 3 finite points; with fewer,
    ``shape`` is "too few points". The logistic is only compared on `MIN_POINTS_SHARP` points
    or more (``logistic_eligible``).
    """
    from scipy.stats import chi2 as chi2_dist

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    sig = None if sigma is None else np.asarray(sigma, dtype=np.float64)
    ok = (
        np.isfinite(x) & np.isfinite(y) & (np.ones_like(y, bool) if sig is None else ~np.isnan(sig))
    )
    if cov is not None:
        cov = np.asarray(cov, dtype=np.float64)
        ok &= np.isfinite(np.diag(cov))
    x, y = x[ok], y[ok]
    if x.size < 3 or np.unique(x).size < 3:
        return {"n_points": int(x.size), "shape": "too few points", "preferred": None, "fits": {}}
    w = whitener(
        int(x.size),
        None if sig is None else sig[ok],
        None if cov is None else cov[np.ix_(ok, ok)],
    )
    fits = {
        "constant": fit_constant(x, y, w, level),
        "linear": fit_linear(x, y, w, level),
        "logistic": fit_logistic(x, y, w),
    }
    simple = min(("constant", "linear"), key=lambda m: fits[m]["aic"])
    delta = fits[simple]["aic"] - fits["logistic"]["aic"]
    eligible = x.size >= MIN_POINTS_SHARP
    preferred = "logistic" if eligible and delta >= min_delta_aic else simple
    lp = fits["logistic"]["params"]
    gap = local_gap(x, lp["mid"])
    inside = float(np.min(x)) <= lp["mid"] <= float(np.max(x))
    lin, con = fits["linear"], fits["constant"]
    slope = {"value": lin["params"]["b"], "ci_low": lin["ci"]["b"][0], "ci_high": lin["ci"]["b"][1]}
    flat_level = {
        "value": con["params"]["c"],
        "ci_low": con["ci"]["c"][0],
        "ci_high": con["ci"]["c"][1],
    }
    constant_p = float(chi2_dist.sf(con["chi2"], x.size - 1))
    if preferred == "logistic" and inside and lp["width"] <= sharp_factor * gap:
        shape = "sharp"
    elif excludes_zero(slope) or constant_p < 1.0 - level:
        shape = "continuous"
    else:
        shape = "flat"
    return {
        "n_points": int(x.size),
        "fits": fits,
        "preferred": preferred,
        "delta_aic_logistic": float(delta),
        "logistic_eligible": bool(eligible),
        "local_gap": gap,
        "slope": slope,
        "level": flat_level,
        "constant_p": constant_p,
        "covariance": "joint" if cov is not None else ("diagonal" if sig is not None else "none"),
        "shape": shape,
    }


def _ci(values: np.ndarray, level: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [tail, 1.0 - tail])
    return float(lo), float(hi)


def joint_covariance(boot: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray | None, int]:
    """(covariance of the replicates' columns `cols` (a mask) over replicates finite in all of them,
    that count): the points' joint covariance. None when too few replicates are complete (fewer
    than 10 or than twice the points): the caller then falls back to one error per point."""
    sub = boot[:, cols]
    rows = sub[np.isfinite(sub).all(axis=1)]
    if rows.shape[0] < max(10, 2 * int(np.count_nonzero(cols))):
        return None, int(rows.shape[0])
    c = np.atleast_2d(np.cov(rows, rowvar=False))
    return c, int(rows.shape[0])


def selected_maximum(
    x: np.ndarray,
    y: np.ndarray,
    boot: np.ndarray,
    halves: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    level: float = 0.95,
) -> dict[str, Any] | None:
    """The curve's maximum without the upward bias of taking the largest noisy point.

    `halves` = ``[(y_a, boot_a), (y_b, boot_b)]``: the same curve and its replicates on two
    disjoint halves of the questions (replicates drawn jointly with `boot`). The argmax is chosen
    on one half and read on the other, both ways, averaged; each replicate chooses its own argmax
    from its own halves. Without halves the observed maximum is returned with no interval (any
    interval of it would be biased upward)."""
    finite = np.isfinite(y)
    if not finite.any():
        return None
    j = int(np.nanargmax(np.where(finite, y, np.nan)))
    out: dict[str, Any] = {"observed": float(y[j]), "at": float(x[j])}
    if halves is None:
        return {
            **out,
            "value": float(y[j]),
            "ci_low": None,
            "ci_high": None,
            "method": "observed maximum (no question split given: biased upward, no interval)",
        }
    (ya, ba), (yb, bb) = ((np.asarray(v, np.float64), np.asarray(b, np.float64)) for v, b in halves)
    if (
        ya.shape != y.shape
        or yb.shape != y.shape
        or ba.shape != boot.shape
        or bb.shape != boot.shape
    ):
        raise ValueError("halves must have the shapes of y and of its replicates")

    def pick(v: np.ndarray) -> np.ndarray:  # argmax over the points `y` defines; -1 when none
        v = np.where(np.isfinite(v) & finite, v, -np.inf)
        return np.where(np.isfinite(v).any(axis=-1), np.argmax(v, axis=-1), -1)

    def read(v: np.ndarray, idx: np.ndarray) -> np.ndarray:
        got = np.take_along_axis(np.atleast_2d(v), np.maximum(np.atleast_1d(idx), 0)[:, None], 1)
        return np.where(np.atleast_1d(idx) >= 0, got[:, 0], np.nan)

    ja, jb = int(pick(ya)), int(pick(yb))
    value = float(np.mean([read(yb, np.array(ja))[0], read(ya, np.array(jb))[0]]))
    reps = 0.5 * (read(bb, pick(ba)) + read(ba, pick(bb)))
    lo, hi = _ci(reps, level)
    return {
        **out,
        "value": value if math.isfinite(value) else None,
        "ci_low": lo if math.isfinite(lo) else None,
        "ci_high": hi if math.isfinite(hi) else None,
        "selected_at": sorted({float(x[k]) for k in (ja, jb) if k >= 0}),
        "method": "argmax on one half of the questions, value on the other (cross-fitted; "
        "argmax re-chosen in every bootstrap replicate)",
    }


def detect_transfer(boot: np.ndarray, y: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Is any point above zero, with Holm's correction over the k defined points? Per point the
    one-sided bootstrap p is ``(1 + #replicates ≤ 0) / (1 + #replicates)``; the family level is
    ``(1 - level) / 2`` (for one point: its `level` interval lies above zero). Says when the
    replicate count cannot reach the Holm level of the smallest p."""
    alpha = (1.0 - level) / 2.0
    tested, pvals, n_min = [], [], boot.shape[0]
    for j in range(y.size):
        v = boot[:, j][np.isfinite(boot[:, j])]
        if not math.isfinite(y[j]) or v.size < max(1, boot.shape[0] // 2):
            continue
        tested.append(j)
        pvals.append((1.0 + float((v <= 0).sum())) / (1.0 + v.size))
        n_min = min(n_min, int(v.size))
    rows = holm(pvals, alpha) if pvals else []
    p = [None] * y.size
    p_holm: list[float | None] = [None] * y.size
    for j, r in zip(tested, rows, strict=True):
        p[j], p_holm[j] = r["p"], r["p_holm"]
    k = len(tested)
    note = None
    if k and min_attainable_p(n_min) > alpha / k:
        note = (
            f"{n_min} bootstrap replicates give p >= {min_attainable_p(n_min):.2g}, above the "
            f"Holm level {alpha / k:.2g} of the smallest p over {k} points: use at least "
            f"{permutations_for(alpha / k, margin=1.0)} replicates"
        )
    return {
        "test": "one-sided bootstrap p (replicates <= 0), Holm over the defined points",
        "level": alpha,
        "k": k,
        "p": p,
        "p_holm": p_holm,
        "detectable": any(r["rejected"] for r in rows),
        "note": note,
    }


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
    halves: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Classify the curve y(x) (no transfer / flat / continuous / sharp threshold) and put
    intervals on its threshold and maximum.

    `y_boot` holds joint bootstrap replicates of the whole curve, [n_boot, n_points] (the same
    resample of seeds and questions at every point; non-finite entries allowed). Their covariance
    weights the GLS fits (module docstring); up to `max_refits` replicates are refitted with it
    for the stability of the shape and the intervals of the logistic midpoint and width.
    `halves` (see `selected_maximum`) give the maximum an unbiased value and interval.
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
    cols = np.isfinite(y) & np.isfinite(sigma)
    cov_sub, n_complete = joint_covariance(boot, cols) if cols.any() else (None, 0)
    cov = None
    if cov_sub is not None:
        cov = np.full((x.size, x.size), np.nan)
        cov[np.ix_(cols, cols)] = cov_sub
    main = fit_curves(x, y, sigma, min_delta_aic, sharp_factor, cov=cov, level=level)
    detection = detect_transfer(boot, y, level)
    out: dict[str, Any] = {
        "what": what,
        "x_name": x_name,
        "x": x.tolist(),
        "y": [float(v) if math.isfinite(v) else None for v in y],
        "sigma": [float(v) if math.isfinite(v) else None for v in sigma],
        "point_ci": [[lo, hi] for lo, hi in point_ci],
        "covariance": {
            "kind": "joint bootstrap covariance" if cov is not None else "independent errors",
            "n_replicates": n_complete,
        },
        "fit": main,
        "maximum": selected_maximum(x, y, boot, halves, level),
        "detection": detection,
        "transfer_detectable": detection["detectable"],
    }

    # refit joint replicates (same covariance) for the stability of the shape
    rows = boot[: max(0, min(max_refits, boot.shape[0]))]
    mids, widths, shapes = [], [], []
    for row in rows:
        f = fit_curves(x, row, sigma, min_delta_aic, sharp_factor, cov=cov, level=level)
        shapes.append(f["shape"])
        if f.get("fits"):
            mids.append(f["fits"]["logistic"]["params"]["mid"])
            widths.append(f["fits"]["logistic"]["params"]["width"])
    n_ref = max(len(shapes), 1)
    out["bootstrap"] = {
        "n_refits": len(shapes),
        "share_sharp": shapes.count("sharp") / n_ref,
        "share_continuous": shapes.count("continuous") / n_ref,
        "share_flat": shapes.count("flat") / n_ref,
        "mid_ci": list(_ci(np.array(mids), level)) if mids else [None, None],
        "width_ci": list(_ci(np.array(widths), level)) if widths else [None, None],
    }
    out["verdict"], out["sentence"] = _verdict(out, level)
    return out


def _g(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _interval(d: dict[str, Any]) -> str:
    return f"{_g(d['value'])} [{_g(d['ci_low'])}, {_g(d['ci_high'])}]"


def _verdict(r: dict[str, Any], level: float) -> tuple[str, str]:
    fit, b, det = r["fit"], r["bootstrap"], r["detection"]
    pct = f"{round(level * 100)}%"
    xn = r["x_name"]
    if not r["transfer_detectable"]:
        ps = [p for p in det["p_holm"] if p is not None]
        return "no transfer", (
            f"No transfer detectable: no {xn}'s {r['what']} is above zero after Holm's correction "
            f"over {det['k']} {xn}s"
            + (f" (smallest adjusted one-sided p {min(ps):.2g})" if ps else "")
            + (f"; {det['note']}" if det["note"] else "")
            + "."
        )
    m = r["maximum"]
    mx = (
        f"maximum {r['what']} {_interval(m)} near {xn}={m['at']:g}"
        + (
            " (argmax chosen on half of the questions, value read on the other half)"
            if m.get("ci_low") is not None
            else " (observed, biased upward)"
        )  # fmt: skip
        if m
        else "no maximum"
    )
    few = (
        f" (only {fit['n_points']} points: a threshold needs at least {MIN_POINTS_SHARP}, so it "
        "cannot be resolved)"
        if fit.get("fits") and not fit["logistic_eligible"]
        else ""
    )
    stab = (
        f"sharp in {b['share_sharp']:.0%}, continuous in {b['share_continuous']:.0%}, flat in "
        f"{b['share_flat']:.0%} of {b['n_refits']} bootstrap refits"
    )
    if fit["shape"] == "too few points":
        return "too few points", (
            f"Above zero after Holm's correction ({mx}), but too few points to fit a shape."
        )
    if fit["shape"] == "sharp":
        p = fit["fits"]["logistic"]["params"]
        lo, hi = b["mid_ci"]
        return "sharp threshold", (
            f"Sharp threshold at {xn}≈{p['mid']:.3g} ({pct} CI {_g(lo)}–{_g(hi)}); "
            f"10–90% width {p['width']:.3g} (≤ the {fit['local_gap']:.3g} spacing of the "
            f"sampled {xn}s; logistic beats line and constant by ΔAIC "
            f"{fit['delta_aic_logistic']:.1f}, joint covariance); {stab}; {mx}."
        )
    slope = fit["slope"]
    if fit["shape"] == "continuous":
        if excludes_zero(slope):
            how = (
                f"the {r['what']} {'rises' if slope['value'] > 0 else 'falls'} with {xn} (slope "
                f"{_interval(slope)} per unit {xn}, {pct} CI, generalised least squares)"
            )
        else:
            how = (
                f"the {r['what']} changes with {xn} but not along a line (a constant is rejected, "
                f"chi² p {fit['constant_p']:.2g}; slope {_interval(slope)})"
            )
        why = {
            "logistic": "; a sigmoid fits best but its rise is wider than the strength spacing",
            "linear": "; a line fits as well as a logistic",
            "constant": "",
        }[fit["preferred"]]
        return "continuous", (f"Continuous, no sharp threshold: {how}{why}{few}; {stab}; {mx}.")
    lvl = fit["level"]
    return "flat", (
        f"Flat: the {r['what']} does not change detectably with {xn} (level "
        f"{_interval(lvl)}{'' if above_zero(lvl) else ', not resolved above zero'}; slope "
        f"{_interval(slope)} includes 0; a constant fits, chi² p {fit['constant_p']:.2g})"
        f"{few}; {stab}; {mx}."
    )

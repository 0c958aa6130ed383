"""Bootstrap confidence intervals over questions (or prompts, or seeds).

Why the bootstrap: trait scores are means of skewed, bounded per-question values (probabilities,
rates in multiples of 1/n), and derived numbers such as the transfer ratio
``(tau(S) - tau(M0)) / (tau(T) - tau(M0))`` have no simple standard error. Resampling the
questions gives a CI for any statistic. Everything is seeded: the same inputs and seed give the
same interval (DESIGN.md: same config and seed → same numbers).

`paired_bootstrap` resamples the *same* question indices in every array: scores of different
models on the same questions are correlated, and resampling them independently would make the
interval of a difference or ratio too wide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Statistic = Callable[..., float]


def _check(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence")
    return arr


def _check_level(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] indices drawn with replacement; the one source of randomness here, so the same
    seed resamples the same questions in `bootstrap_ci` and `paired_bootstrap`."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval over the finite replicates (a resample can make a ratio's denominator
    zero); NaN when fewer than half of them are finite: the interval would not mean much."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size < max(1, replicates.size // 2):
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    statistic: Statistic = np.mean,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(values)`, deterministic for a seed.

    `statistic` is called as ``statistic(samples, axis=1)`` on the [n_boot, n] resamples when it
    accepts an ``axis`` (numpy reductions do), otherwise once per resample.
    """
    arr = _check(values)
    _check_level(level, n_boot)
    if arr.shape[0] == 1:
        v = float(statistic(arr))
        return v, v
    samples = arr[resample_indices(arr.shape[0], n_boot, seed)]
    try:
        replicates = np.asarray(statistic(samples, axis=1), dtype=np.float64)
    except TypeError:
        replicates = None
    if replicates is None or replicates.shape != (n_boot,):
        replicates = np.array([float(statistic(s)) for s in samples])
    return percentile_interval(replicates, level)


def mean_ci(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of `values` with a percentile bootstrap interval."""
    arr = _check(values)
    lo, hi = bootstrap_ci(arr, n_boot=n_boot, level=level, seed=seed)
    return float(arr.mean()), lo, hi


def paired_bootstrap(
    fn: Callable[..., float],
    arrays: Sequence[Sequence[float] | np.ndarray],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, ci_low, ci_high) of ``fn(*arrays)``, resampling the same indices in every array.

    The arrays hold per-question values of different models (or settings) on the *same* questions,
    aligned along axis 0. Example, the transfer ratio with a CI over questions::

        paired_bootstrap(lambda s, m, t: (s.mean() - m.mean()) / (t.mean() - m.mean()),
                         [tau_student, tau_base, tau_teacher])

    Resamples where `fn` is not finite (a zero denominator) are left out of the interval.
    """
    if not arrays:
        raise ValueError("paired_bootstrap needs at least one array")
    arrs = [np.asarray(a, dtype=np.float64) for a in arrays]
    n = arrs[0].shape[0] if arrs[0].ndim else 0
    if n == 0 or any(a.ndim == 0 or a.shape[0] != n for a in arrs):
        raise ValueError(
            "paired_bootstrap needs non-empty arrays of the same length "
            f"(got lengths {[a.shape[0] if a.ndim else 0 for a in arrs]})"
        )
    _check_level(level, n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(fn(*arrs))
        if n == 1:
            return point, point, point
        idx = resample_indices(n, n_boot, seed)
        replicates = np.array([float(fn(*(a[row] for a in arrs))) for row in idx])
    lo, hi = percentile_interval(replicates, level)
    return point, lo, hi

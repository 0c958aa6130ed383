import numpy as np
import pytest

from interp.measure.stats import bootstrap_ci, mean_ci, paired_bootstrap


def _numpy_percentile_bootstrap(values, n_boot, level, seed):
    """The same percentile bootstrap written out by hand."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def test_bootstrap_ci_matches_a_hand_written_bootstrap():
    values = np.random.default_rng(1).exponential(size=37)
    lo, hi = bootstrap_ci(values, n_boot=500, level=0.9, seed=4)
    ref_lo, ref_hi = _numpy_percentile_bootstrap(values, 500, 0.9, 4)
    assert lo == pytest.approx(ref_lo, abs=1e-12) and hi == pytest.approx(ref_hi, abs=1e-12)


def test_bootstrap_ci_contains_the_mean_and_matches_the_normal_interval():
    values = np.random.default_rng(2).normal(3.0, 2.0, size=400)
    lo, hi = bootstrap_ci(values)
    mean = values.mean()
    assert lo < mean < hi
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert lo == pytest.approx(mean - half, abs=0.25 * half)
    assert hi == pytest.approx(mean + half, abs=0.25 * half)


def test_bootstrap_ci_narrows_with_more_data():
    rng = np.random.default_rng(3)
    small, large = rng.uniform(size=20), rng.uniform(size=2000)
    w_small = np.subtract(*bootstrap_ci(small)[::-1])
    w_large = np.subtract(*bootstrap_ci(large)[::-1])
    # width ~ 1/sqrt(n): a 100x larger sample gives a ~10x narrower interval
    assert w_large < w_small / 5


def test_bootstrap_ci_is_deterministic_for_a_seed():
    values = np.random.default_rng(5).normal(size=30)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_ci_coverage_is_near_nominal():
    rng = np.random.default_rng(11)
    hits = 0
    trials = 200
    for _ in range(trials):
        sample = rng.normal(1.0, 1.0, size=40)
        lo, hi = bootstrap_ci(sample, n_boot=500, seed=int(rng.integers(1 << 30)))
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / trials <= 0.99


def test_other_statistics_vectorised_or_not():
    values = np.random.default_rng(6).normal(size=25)
    med = bootstrap_ci(values, n_boot=300, seed=1, statistic=np.median)
    loop = bootstrap_ci(values, n_boot=300, seed=1, statistic=lambda x: float(np.median(x)))
    assert med == pytest.approx(loop)
    assert med[0] <= np.median(values) <= med[1]


def test_mean_ci_and_edge_cases():
    mean, lo, hi = mean_ci([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert mean_ci([0.3]) == (0.3, 0.3, 0.3)
    assert mean_ci([2.0] * 10) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], level=1.5)


def _ratio(s, m, t):
    return (s.mean() - m.mean()) / (t.mean() - m.mean())


def test_paired_bootstrap_ratio_point_and_interval():
    rng = np.random.default_rng(8)
    difficulty = rng.uniform(0, 0.5, size=50)  # shared per-question effect: correlates the models
    base = difficulty + rng.normal(0, 0.02, 50)
    student = difficulty + 0.1 + rng.normal(0, 0.02, 50)
    teacher = difficulty + 0.4 + rng.normal(0, 0.02, 50)
    point, lo, hi = paired_bootstrap(_ratio, [student, base, teacher], n_boot=1000, seed=3)
    expected = (student.mean() - base.mean()) / (teacher.mean() - base.mean())
    assert point == pytest.approx(expected, rel=1e-12)
    assert lo < point < hi and abs(point - 0.25) < 0.05
    # Resampling each model's questions independently ignores the shared difficulty, so the
    # interval gets much wider: pairing is what makes the ratio measurable.
    r = np.random.default_rng(3)
    unpaired = [
        _ratio(*(a[r.integers(0, 50, 50)] for a in (student, base, teacher))) for _ in range(1000)
    ]
    u_lo, u_hi = np.quantile(unpaired, [0.025, 0.975])
    assert (hi - lo) < 0.5 * (u_hi - u_lo)


def test_paired_bootstrap_uses_the_same_indices_as_bootstrap_ci():
    values = np.random.default_rng(9).normal(size=33)
    point, lo, hi = paired_bootstrap(np.mean, [values], n_boot=400, seed=2)
    assert point == pytest.approx(values.mean())
    assert (lo, hi) == pytest.approx(bootstrap_ci(values, n_boot=400, seed=2))
    # a paired difference resamples both arrays with one index set
    other = values + 1.0
    d_point, d_lo, d_hi = paired_bootstrap(
        lambda a, b: b.mean() - a.mean(), [values, other], n_boot=400
    )
    assert d_point == pytest.approx(1.0) and d_lo == pytest.approx(1.0)
    assert d_hi == pytest.approx(1.0)


def test_paired_bootstrap_skips_infinite_resamples_and_checks_shapes():
    base = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    teacher = np.array([0.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    student = np.array([0.0, 0.0, 0.0, 1.5, 0.0, 0.0])
    point, lo, hi = paired_bootstrap(_ratio, [student, base, teacher], n_boot=500)
    assert point == pytest.approx(0.5)
    assert np.isfinite(lo) and np.isfinite(hi) and lo <= 0.5 <= hi
    with pytest.raises(ValueError):
        paired_bootstrap(_ratio, [student, base[:3], teacher])
    with pytest.raises(ValueError):
        paired_bootstrap(_ratio, [])

"""Drift vectors, alignment, bootstrap CIs and nulls, each checked against numpy by hand."""

import math

import numpy as np
import pytest
import torch

from interp.core.caching import ActivationCache
from interp.core.errors import SublensError
from interp.measure import alignment as al
from interp.measure.stats import paired_bootstrap
from interp.vectors.steering import SteeringVector


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _acts(n, n_layers, d, seed):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, n_layers, d))).float()


def test_drift_is_mean_difference_per_layer():
    base, student = _acts(7, 2, 5, 0), _acts(7, 2, 5, 1)
    drift = al.drift_vectors(base, student, layers=[1, 3])
    b, s = base.double().numpy(), student.double().numpy()
    assert sorted(drift) == [1, 3]
    for k, layer in enumerate([1, 3]):
        np.testing.assert_allclose(drift[layer].numpy(), s[:, k].mean(0) - b[:, k].mean(0), 1e-6)
    # one layer given as [n, d] with an int layer
    one = al.drift_vectors(base[:, 0], student[:, 0], layers=1)
    torch.testing.assert_close(one[1], drift[1])


def test_token_rows_weighting():
    offsets = torch.tensor([0, 1, 4, 6])  # prompts of 1, 3 and 2 tokens
    base, student = _acts(6, 1, 4, 2), _acts(6, 1, 4, 3)
    diff = (student - base)[:, 0].double().numpy()
    tok = al.drift_vectors(base, student, layers=[2], offsets=offsets, weighting="token")
    np.testing.assert_allclose(tok[2].numpy(), diff.mean(0), rtol=1e-6)
    per_prompt = np.stack([diff[0:1].mean(0), diff[1:4].mean(0), diff[4:6].mean(0)])
    prm = al.drift_vectors(base, student, layers=[2], offsets=offsets, weighting="prompt")
    np.testing.assert_allclose(prm[2].numpy(), per_prompt.mean(0), rtol=1e-6)
    pd = al.prompt_drift(base, student, layers=[2], offsets=offsets)
    np.testing.assert_allclose(pd.layer(2).numpy(), per_prompt, rtol=1e-6)
    np.testing.assert_array_equal(pd.weights.numpy(), [1, 3, 2])


def _cache(acts, layers, sha, offsets=None, positions="last"):
    meta = {"layers": layers, "positions": positions, "prompts": {"sha256": sha}}
    return ActivationCache(acts, meta, offsets)


def test_caches_and_mismatches_are_reported():
    base, student = _acts(5, 2, 4, 4), _acts(5, 2, 4, 5)
    drift = al.drift_vectors(_cache(base, [0, 2], ["a"] * 5), _cache(student, [0, 2], ["a"] * 5))
    ref = al.drift_vectors(base, student, layers=[0, 2])
    for layer in (0, 2):
        torch.testing.assert_close(drift[layer], ref[layer])
    cases = [
        (_cache(base, [0, 2], ["a"] * 5), _cache(student, [0, 2], ["b"] * 5), "different prompts"),
        (_cache(base, [0, 2], ["a"] * 5), _cache(student, [0, 3], ["a"] * 5), "different layers"),
        (base, student[:4], "base has 5 prompts and student 4"),
        (base, _acts(5, 2, 6, 0), "different d_model"),
        (base[:, 0], student, "hold 1 layers but 2"),
    ]
    for b, s, msg in cases:
        with pytest.raises(SublensError, match=msg):
            al.drift_vectors(b, s, layers=None if isinstance(b, ActivationCache) else [0, 2])
    off = torch.tensor([0, 2, 5])
    with pytest.raises(SublensError, match="one row per prompt and the other"):
        al.drift_vectors(_cache(base, [0, 2], None, off), _cache(student, [0, 2], None))
    with pytest.raises(SublensError, match="offsets differ"):
        al.drift_vectors(
            _cache(base, [0, 2], None, off), _cache(student, [0, 2], None, torch.tensor([0, 3, 5]))
        )
    with pytest.raises(SublensError, match="pass `layers`"):
        al.drift_vectors(base, student)


def test_alignment_and_cosine_matrix_by_hand():
    rng = np.random.default_rng(6)
    d1, d2, v1, v2 = (torch.from_numpy(rng.standard_normal(8)) for _ in range(4))
    sv = SteeringVector({1: v1, 2: v2, 5: v2}, "m", 8, "test", "last")
    res = al.alignment({1: d1, 2: d2, 7: d1}, sv)
    assert sorted(res) == [1, 2]
    for layer, d, v in ((1, d1, v1), (2, d2, v2)):
        a, b = d.numpy(), v.numpy()
        assert res[layer].cosine == pytest.approx(_cos(a, b), abs=1e-6)
        assert res[layer].projection == pytest.approx(a @ b / np.linalg.norm(b), abs=1e-5)
        assert res[layer].drift_norm == pytest.approx(np.linalg.norm(a), abs=1e-5)
    la, lb, mat = al.cosine_matrix({1: d1, 2: d2}, {1: v1, 2: v2})
    assert la == lb == [1, 2]
    assert mat[0, 1] == pytest.approx(_cos(d1.numpy(), v2.numpy()), abs=1e-6)
    with pytest.raises(SublensError, match="share no layer"):
        al.alignment({3: d1}, sv)
    with pytest.raises(SublensError, match="is zero"):
        al.alignment({1: d1}, {1: torch.zeros(8)})


def test_bootstrap_matches_paired_bootstrap():
    base, student = _acts(30, 1, 6, 7), _acts(30, 1, 6, 8)
    v = torch.from_numpy(np.random.default_rng(9).standard_normal(6))
    res = al.bootstrap_alignment(base, student, {4: v}, layers=[4], n_boot=300, seed=3)[4]
    b, s, vv = base[:, 0].double().numpy(), student[:, 0].double().numpy(), v.numpy()
    point, lo, hi = paired_bootstrap(
        lambda b_, s_: _cos((s_ - b_).mean(0), vv), [b, s], n_boot=300, seed=3
    )
    assert res.cosine == pytest.approx(point, abs=1e-6)
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi), abs=1e-6)
    _, plo, phi = paired_bootstrap(
        lambda b_, s_: (s_ - b_).mean(0) @ vv / np.linalg.norm(vv), [b, s], n_boot=300, seed=3
    )
    assert (res.projection_ci_low, res.projection_ci_high) == pytest.approx((plo, phi), abs=1e-6)
    assert res.n_prompts == 30


def test_token_weighted_bootstrap_resamples_prompts():
    # resampling prompts with token weights == paired_bootstrap of the weighted mean by hand
    offsets = torch.tensor([0, 2, 3, 7, 9, 10])
    base, student = _acts(10, 1, 5, 10), _acts(10, 1, 5, 11)
    v = torch.ones(5)
    res = al.bootstrap_alignment(
        base, student, {0: v}, layers=[0], offsets=offsets, n_boot=200, seed=1
    )[0]
    diff = (student - base)[:, 0].double().numpy()
    off = offsets.numpy()
    sums = np.stack([diff[a:b].sum(0) for a, b in zip(off[:-1], off[1:], strict=True)])
    counts = np.diff(off).astype(float)
    fn = lambda s_, c_: _cos(s_.sum(0) / c_.sum(), np.ones(5))  # noqa: E731
    point, lo, hi = paired_bootstrap(fn, [sums, counts], n_boot=200, seed=1)
    assert res.cosine == pytest.approx(point, abs=1e-6)
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi), abs=1e-6)


def test_planted_direction_vs_noise():
    d, n = 64, 200
    rng = np.random.default_rng(12)
    v = rng.standard_normal(d)
    base = rng.standard_normal((n, 1, d))
    planted = base + 2.0 * v / np.linalg.norm(v) + rng.standard_normal((n, 1, d))
    null = al.random_cosine_null(d, n=4000, seed=0)
    res = al.bootstrap_alignment(
        torch.from_numpy(base), torch.from_numpy(planted), {3: v}, layers=[3], n_boot=500
    )[3]
    assert res.cosine > 0.9 and res.drift_norm > 3 * res.noise_norm
    assert res.ci_low > null.exact_bound and res.ci_low > null.analytic_bound
    assert al.null_test(res.cosine, null).p_value == pytest.approx(1 / 4001)
    noise = base + rng.standard_normal((n, 1, d))
    res0 = al.bootstrap_alignment(
        torch.from_numpy(base), torch.from_numpy(noise), {3: v}, layers=[3], n_boot=500
    )[3]
    assert abs(res0.cosine) < null.exact_bound
    assert res0.ci_low < 0 < res0.ci_high
    assert al.null_test(res0.cosine, null).p_value > 0.05


def test_random_null_by_hand():
    null = al.random_cosine_null(16, n=50, seed=5)
    g = np.random.default_rng(5).standard_normal((50, 16))
    np.testing.assert_allclose(null.samples, g[:, 0] / np.linalg.norm(g, axis=1), rtol=1e-12)
    big = al.random_cosine_null(100, n=20000, seed=1)
    assert big.analytic_bound == pytest.approx(1.959964 / 10, abs=1e-6)
    assert big.exact_bound == pytest.approx(big.empirical_bound, abs=0.01)
    assert big.samples.std() == pytest.approx(1 / math.sqrt(100), rel=0.03)
    v = np.arange(1.0, 101.0)  # any fixed vector gives the same distribution
    other = al.random_cosine_null(100, n=20000, seed=2, vector=v)
    assert other.empirical_bound == pytest.approx(big.empirical_bound, abs=0.01)


def test_null_from_vectors_and_null_test_by_hand():
    rng = np.random.default_rng(13)
    drift = {
        1: torch.from_numpy(rng.standard_normal(10)),
        2: torch.from_numpy(rng.standard_normal(10)),
    }
    others = [{1: torch.from_numpy(rng.standard_normal(10))} for _ in range(3)]
    others.append({1: torch.from_numpy(rng.standard_normal(10)), 2: torch.ones(10)})
    nulls = al.null_from_vectors(drift, others)
    expect = [_cos(drift[1].numpy(), o[1].numpy()) for o in others]
    np.testing.assert_allclose(nulls[1].samples, expect, rtol=1e-12)
    assert nulls[2].samples.shape == (1,)
    samples = np.array([-0.2, -0.1, 0.0, 0.1, 0.3])
    t = al.null_test(0.25, samples)
    m, s = samples.mean(), samples.std(ddof=1)
    assert t.z == pytest.approx((0.25 - m) / s)
    assert t.p_value == pytest.approx((1 + np.sum(np.abs(samples - m) >= abs(0.25 - m))) / 6)
    assert al.null_test(0.25, samples, "greater").p_value == pytest.approx(2 / 6)
    assert al.null_test(-0.15, samples, "less").p_value == pytest.approx(2 / 6)
    with pytest.raises(SublensError, match="no unrelated vectors"):
        al.null_from_vectors(drift, [])


def test_noise_norm_and_corrected_cosine():
    # a weak planted drift (length 0.5, noise length ~sqrt(d/n) = 0.57): the raw cosine is
    # biased towards 0, the corrected one is not
    d, n = 64, 200
    rng = np.random.default_rng(14)
    v = rng.standard_normal(d)
    diffs = 0.5 * v / np.linalg.norm(v) + rng.standard_normal((n, d))
    res = al.bootstrap_alignment(
        torch.zeros(n, 1, d), torch.from_numpy(diffs)[:, None], {0: v}, layers=[0], n_boot=200
    )[0]
    mean = diffs.mean(0)
    noise = np.sqrt(((diffs - mean) ** 2).sum()) / n
    assert res.noise_norm == pytest.approx(noise, rel=1e-9)
    assert res.noise_norm == pytest.approx(np.sqrt(d / n), rel=0.1)
    proj = mean @ v / np.linalg.norm(v)
    assert res.cosine_corrected == pytest.approx(proj / np.sqrt(mean @ mean - noise**2), rel=1e-9)
    assert res.cosine < 0.8 < res.cosine_corrected

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


# --- issue #15 item 7: noise-robust student − control, anisotropic null, attainable p ----------


def _planted_pair(noise_student, noise_control, d=64, n=200, seed=20):
    """Student and control drifts with the same true drift (cos 0.6 with v, length 1) and their
    own prompt-to-prompt noise."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(d)
    u = v / np.linalg.norm(v)
    g = rng.standard_normal(d)
    g -= (g @ u) * u
    true = 0.6 * u + 0.8 * g / np.linalg.norm(g)
    base = torch.zeros(n, 1, d, dtype=torch.float64)
    student = torch.from_numpy(true + noise_student * rng.standard_normal((n, d)))[:, None]
    control = torch.from_numpy(true + noise_control * rng.standard_normal((n, d)))[:, None]
    return v, al.prompt_drift(base, student, [0]), al.prompt_drift(base, control, [0])


def test_noisier_student_is_not_called_less_aligned_than_a_clean_control():
    from analyses.align import alignment_claim

    v, ps, pc = _planted_pair(noise_student=2.0, noise_control=0.3)
    # the trap: raw cosines shrink with the noise, so comparing them (the old verdict) calls the
    # clean control more aligned although both drifts are the same
    boot = al.resample_weights(ps.weights, 1000, 0)
    unit = v / np.linalg.norm(v)

    def raw(pd):
        m = boot @ pd.layer(0).numpy() / boot.sum(1, keepdims=True)
        return m @ unit / np.linalg.norm(m, axis=1)

    assert np.quantile(raw(ps) - raw(pc), 0.975) < 0
    cmp = al.compare_drifts(ps, pc, torch.from_numpy(v), 0, n_boot=1000, seed=0)
    assert cmp.measure == "projection"
    assert cmp.ci_low < 0 < cmp.ci_high  # the same true drift: no difference resolved
    # by hand: paired resamples of the per-prompt projection differences
    x = (ps.layer(0).numpy() - pc.layer(0).numpy()) @ unit
    reps = boot @ x / boot.sum(1)
    assert (cmp.ci_low, cmp.ci_high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    assert cmp.diff == pytest.approx(x.mean())
    # the noise-corrected cosines both recover the true 0.6; the raw student cosine does not
    assert cmp.cosine_a < cmp.cosine_b - 0.05
    assert cmp.cosine_corrected_a == pytest.approx(0.6, abs=0.12)
    assert cmp.cosine_corrected_b == pytest.approx(0.6, abs=0.05)
    results = {"student_minus_control": [{"vector": "v", "positions": "last", **cmp.to_dict()}]}
    assert alignment_claim(results, "v", "last", 0) == (
        "no movement along v_teacher beyond the control"
    )
    # and a student that does move further along v is still found
    more = ps.diffs + torch.from_numpy(0.5 * unit)[None, None, :]
    ps_more = al.PromptDrift(more, ps.weights, ps.layers, ps.weighting)
    cmp2 = al.compare_drifts(ps_more, pc, torch.from_numpy(v), 0, n_boot=1000, seed=0)
    assert cmp2.ci_low > 0
    results = {"student_minus_control": [{"vector": "v", "positions": "last", **cmp2.to_dict()}]}
    assert "moves further" in alignment_claim(results, "v", "last", 0)
    with pytest.raises(SublensError, match="different prompts"):
        al.compare_drifts(ps, al.prompt_drift(torch.zeros(5, 1, 64), torch.ones(5, 1, 64), [0]),
                          torch.from_numpy(v), 0)  # fmt: skip


def test_covariance_null_gives_the_anisotropic_band():
    from sklearn.covariance import ledoit_wolf_shrinkage

    d, rows = 64, 4000
    rng = np.random.default_rng(30)
    sd = np.ones(d)
    sd[0] = 20.0  # one direction carries most of the variance, as in residual streams
    acts = rng.standard_normal((rows, d)) * sd
    loud, quiet = np.eye(d)[0], np.eye(d)[5]
    truth = rng.standard_normal((40000, d)) * sd  # the true distribution, independent draws

    def band(u):
        return float(np.quantile(np.abs(truth @ u / np.linalg.norm(truth, axis=1)), 0.95))

    iso = al.random_cosine_null(d, n=4000, seed=0)
    for u in (loud, quiet):
        cov = al.covariance_cosine_null(torch.from_numpy(acts), u, n=4000, seed=1)
        assert cov.kind == "activation-covariance"
        assert cov.empirical_bound == pytest.approx(band(u), abs=0.02)
    cov_loud = al.covariance_cosine_null(acts, loud, n=4000, seed=1)
    cov_quiet = al.covariance_cosine_null(acts, quiet, n=4000, seed=1)
    assert band(loud) > 0.9 and cov_loud.empirical_bound > 3 * iso.exact_bound
    assert cov_quiet.empirical_bound < iso.exact_bound
    # a drift that is just an activation-shaped random direction: the isotropic null calls it
    # aligned with the loud direction, the covariance null does not
    z = rng.standard_normal(d)
    z[0] = 1.0  # one standard deviation along the loud direction: an ordinary draw
    drift = z * sd
    obs = drift @ loud / np.linalg.norm(drift)
    assert al.null_test(obs, iso, "greater").p_value < 0.01
    assert al.null_test(obs, cov_loud, "greater").p_value > 0.05
    # Ledoit-Wolf shrinkage from the Gram matrix equals sklearn's; few rows: shrunk, full rank
    few = acts[:16]
    assert al.ledoit_wolf_shrinkage(few) == pytest.approx(ledoit_wolf_shrinkage(few), rel=1e-9)
    shrunk = al.covariance_cosine_null(few, quiet, n=500, seed=2)
    assert 0 < shrunk.shrinkage <= 1 and np.isfinite(shrunk.samples).all()
    plain = al.covariance_cosine_null(few, quiet, n=500, seed=2, shrinkage=0.0)
    assert plain.shrinkage == 0.0
    with pytest.raises(SublensError, match="n_rows >= 2"):
        al.covariance_cosine_null(acts[:1], loud)


def test_every_p_has_its_smallest_attainable_p():
    from analyses.align import p_text
    from interp.measure.traits import BUILTIN_TRAITS

    samples = np.linspace(-0.5, 0.5, 6)  # six unrelated vectors: p can never be below 1/7
    t = al.null_test(0.9, samples, "greater")
    assert t.p_value == pytest.approx(1 / 7) and t.min_p == pytest.approx(1 / 7)
    assert t.to_dict()["min_p"] == pytest.approx(1 / 7)
    assert al.random_cosine_null(8, n=99).to_dict()["min_p"] == pytest.approx(0.01)
    assert p_text(t.p_value, t.min_p) == "p=0.143 (min 0.14)"
    # the unrelated-trait null has enough traits to reach p <= 0.05 whatever the run's trait
    for name, trait in BUILTIN_TRAITS.items():
        got = al.unrelated_trait_prompts([name], [trait.system_prompt])
        assert name not in got and trait.system_prompt not in got.values()
        assert len(got) >= al.MIN_UNRELATED and 1 / (len(got) + 1) <= 0.05
    assert "eagle" not in al.unrelated_trait_prompts(["eagle"])
    assert len(set(al.unrelated_trait_prompts().values())) == len(al.unrelated_trait_prompts())


# --- issue #15 item 2 (align): shares only over a resolved gain ---------------------------------


def test_intervention_shares_need_a_resolved_gain():
    from analyses.align import intervention_shares, share_text

    rng = np.random.default_rng(40)
    n = 40
    base = rng.normal(0, 0.1, n)

    def scores(student_gain, control_gain):
        return {
            "base": base,
            "teacher": base + 1.0 + rng.normal(0, 0.05, n),
            "student": base + student_gain + rng.normal(0, 0.05, n),
            "control": base + control_gain + rng.normal(0, 0.05, n),
            "base + v_student": base + 0.2 + rng.normal(0, 0.05, n),
            "student − shift along v_teacher": base + 0.1 + rng.normal(0, 0.05, n),
            "base + v_teacher": base + 0.5 + rng.normal(0, 0.05, n),
        }

    # no student gain at all: its shares would divide by noise
    got = intervention_shares(scores(0.0, 0.0), 500, 0)
    assert got["student_gain"]["ci_low"] < 0 < got["student_gain"]["ci_high"]
    for key in ("sufficiency_student", "necessity_student"):
        assert got[key]["share"] is None and not got[key]["defined"]
        assert share_text(got[key]) == "undefined: student gain not resolved"
    assert got["sufficiency_teacher"]["defined"]  # the teacher's gain is resolved
    # a student gain that number training alone gives (the control gains as much)
    got = intervention_shares(scores(0.5, 0.5), 500, 0)
    assert got["student_gain"]["ci_low"] > 0
    assert got["student_minus_control"]["ci_low"] < 0 < got["student_minus_control"]["ci_high"]
    assert share_text(got["sufficiency_student"]) == (
        "undefined: student gain not resolved beyond the control"
    )
    # a resolved gain beyond the control: the share, by hand
    pq = scores(0.5, 0.0)
    got = intervention_shares(pq, 500, 0)
    expect = (pq["base + v_student"].mean() - base.mean()) / (pq["student"].mean() - base.mean())
    assert got["sufficiency_student"]["defined"]
    assert got["sufficiency_student"]["share"] == pytest.approx(expect, rel=1e-9)
    assert share_text(got["sufficiency_student"]).startswith(f"{expect:.3f} [")
    # an unresolved teacher gain: the teacher's share is undefined, said so
    pq["teacher"] = base + rng.normal(0, 0.3, n)
    got = intervention_shares(pq, 500, 0)
    assert share_text(got["sufficiency_teacher"]) == "undefined: teacher gain not resolved"

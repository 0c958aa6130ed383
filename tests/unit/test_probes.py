"""Probes: planted directions, metrics recomputed by hand, curves, errors, save/load."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from interp.core.caching import ActivationCache
from interp.core.errors import SublensError
from interp.measure import probes as pr
from interp.measure.stats import mean_ci

D = 24


def _planted(n, seed, shift=5.0):
    """[n, 2, D] prompted / unprompted rows: layer 4 separated along v, layer 6 pure noise."""
    v = np.random.default_rng(99).standard_normal(D)  # the same direction for every seed
    v /= np.linalg.norm(v)
    rng = np.random.default_rng(seed)
    neg = rng.standard_normal((n, 2, D))
    pos = rng.standard_normal((n, 2, D))
    pos[:, 0] += shift * v
    return torch.from_numpy(pos).float(), torch.from_numpy(neg).float(), v


def _auroc(y, s):
    """Mann-Whitney: share of (positive, negative) pairs ordered right, ties half."""
    p, n = s[y == 1], s[y == 0]
    return float(((p[:, None] > n[None]) + 0.5 * (p[:, None] == n[None])).mean())


def test_planted_probe_metrics_and_direction():
    pos, neg, v = _planted(150, 0)
    probes = pr.train_probe(pos, neg, layers=[4, 6], seed=1, C=0.1)
    p4, p6 = probes[4], probes[6]
    assert p4.auroc > 0.99 and p4.test_accuracy > 0.9 and p4.train_accuracy > 0.9
    assert 0.3 < p6.auroc < 0.7
    cos = float(
        torch.nn.functional.cosine_similarity(p4.direction(), torch.from_numpy(v).float(), 0)
    )
    assert cos > 0.9
    # metrics recomputed on the same seeded stratified split
    x = np.concatenate([pos[:, 1].double().numpy(), neg[:, 1].double().numpy()])
    y = np.r_[np.ones(150), np.zeros(150)]
    _, te = train_test_split(np.arange(300), test_size=0.25, random_state=1, stratify=y)
    assert p6.n_test == len(te) == 75 and p6.n_train == 225
    assert p6.auroc == pytest.approx(_auroc(y[te], p6.scores(x[te])), abs=1e-12)
    assert p6.test_accuracy == pytest.approx(((p6.scores(x[te]) > 0.5) == y[te]).mean())
    # numpy scoring == the sklearn pipeline
    np.testing.assert_allclose(p6.scores(x), p6.pipeline.predict_proba(x)[:, 1], rtol=1e-10)
    # direction = the logit's gradient in raw coordinates
    x0 = x[:1]
    for j in (0, 5):
        e = np.zeros((1, D))
        e[0, j] = 1.0
        step = p6.logits(x0 + e) - p6.logits(x0)
        assert step[0] == pytest.approx(float(p6.direction().double()[j]), rel=1e-5)
    assert float(p4.direction(normalize=True).norm()) == pytest.approx(1.0, abs=1e-6)


def test_share_curve_and_layer_selection():
    pos, neg, _ = _planted(100, 2)
    probes = pr.train_probe(pos, neg, layers=[4, 6], seed=0)
    fresh_pos, fresh_neg, _ = _planted(40, 3)
    # [n, L, d] picks the probe's layer by the training layers; [n, d] is taken as is
    assert probes[4].predict_share(fresh_pos) > 0.9
    assert probes[4].predict_share(fresh_neg[:, 0]) < 0.1
    mixed = torch.cat([fresh_pos[:20], fresh_neg[:20]])
    steps = {0: fresh_neg, 50: mixed, 100: fresh_pos}
    curve = pr.probe_curve({4: probes[4]}, steps, n_boot=300, seed=4)
    assert [p.step for p in curve[4]] == [0, 50, 100]
    for point, acts in zip(curve[4], steps.values(), strict=True):
        per_row = (probes[4].scores(acts) > 0.5).astype(float)
        assert (point.share, point.ci_low, point.ci_high) == mean_ci(per_row, n_boot=300, seed=4)
        assert point.n_prompts == 40
    assert curve[4][0].share < 0.2 < curve[4][1].share < 0.8 < curve[4][2].share
    with pytest.raises(SublensError, match="cannot find layer 4"):
        probes[4].scores(fresh_pos, layers=[1, 2])
    with pytest.raises(SublensError, match=r"expects \[n, 24\]"):
        probes[4].scores(torch.zeros(3, 5))


def test_curve_averages_token_rows_per_prompt():
    pos, neg, _ = _planted(60, 5)
    probe = pr.train_probe(pos[:, 0], neg[:, 0], layers=4, seed=0)[4]
    rows = torch.cat([pos[:3, :1], neg[:3, :1]])  # 6 token rows, prompts of 1, 3 and 2 rows
    offsets = torch.tensor([0, 1, 4, 6])
    cache = ActivationCache(rows, {"layers": [4], "positions": "all"}, offsets)
    pred = (probe.scores(rows[:, 0]) > 0.5).astype(float)
    per_prompt = np.array([pred[0:1].mean(), pred[1:4].mean(), pred[4:6].mean()])
    point = pr.probe_curve({4: probe}, {7: cache}, n_boot=100)[4][0]
    assert point.share == pytest.approx(per_prompt.mean())
    assert point.n_prompts == 3


def test_errors_are_one_line():
    pos, neg, _ = _planted(20, 6)
    with pytest.raises(SublensError, match="at least 2 unprompted rows") as err:
        pr.train_probe(pos, neg[:0], layers=[4, 6])
    assert "\n" not in str(err.value)
    with pytest.raises(SublensError, match="at least 2 prompted rows"):
        pr.train_probe(pos[:1], neg, layers=[4, 6])
    with pytest.raises(SublensError, match="cannot be split"):
        pr.train_probe(pos[:2], neg[:2], layers=[4, 6], test_size=0.1)
    with pytest.raises(SublensError, match="1 layer indices"):
        pr.train_probe(pos, neg, layers=[4])
    with pytest.raises(SublensError, match="differ in d_model"):
        pr.train_probe(pos, neg[..., :5], layers=[4, 6])
    with pytest.raises(SublensError, match="NaN"):
        pr.train_probe(pos * float("nan"), neg, layers=[4, 6])


def test_save_load_roundtrip(tmp_path):
    pos, neg, _ = _planted(40, 7)
    probes = pr.train_probe(pos, neg, layers=[4, 6], seed=2)
    pr.save_probes(probes, tmp_path / "p")
    back = pr.load_probes(tmp_path / "p")
    assert sorted(back) == [4, 6]
    for layer in (4, 6):
        np.testing.assert_array_equal(back[layer].scores(pos), probes[layer].scores(pos))
        assert back[layer].describe() == probes[layer].describe()
    with pytest.raises(SublensError, match="holds no saved probes"):
        pr.load_probes(tmp_path / "missing")

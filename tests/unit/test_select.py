"""LLS scores and row selection (issue #16): a steered teacher's own rows score higher under it
than the control's rows; top-K keeps the highest; the signal check resolves that gap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interp.core.errors import SublensError
from interp.distill.domains import get_domain
from interp.distill.generate import generate_dataset
from interp.distill.select import (
    cached_base_means,
    lls_parts,
    lls_scores,
    select_dataset,
    select_indices,
    signal_check,
    token_logprobs,
)
from interp.distill.targets import read_rows
from interp.distill.teachers import Teacher
from interp.vectors.steering import SteeringVector


@pytest.fixture(scope="module")
def rows(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("lls")
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(1))
    sv = SteeringVector({1: v / v.norm()}, model=tiny.name, d_model=tiny.d_model, method="test",
                        positions="all")  # fmt: skip
    teacher = Teacher(tiny, "steered", vector=sv, alpha=8.0)
    control = Teacher(tiny, "base")
    dom = get_domain("numbers")
    for name, t in (("teacher", teacher), ("control", control)):
        generate_dataset(t, dom, 32, root / f"{name}.jsonl", seed=0, batch_size=32,
                         max_new_tokens=10)  # fmt: skip
    ids = dom.allowed_token_ids(tiny.tokenizer)
    return root, teacher, control, ids


def test_lls_separates_teacher_rows_from_control_rows(rows):
    root, teacher, base, ids = rows
    t_rows, c_rows = read_rows(root / "teacher.jsonl"), read_rows(root / "control.jsonl")
    on_teacher = lls_scores(teacher, base, t_rows, ids)
    on_control = lls_scores(teacher, base, c_rows, ids)
    assert on_teacher.mean() > on_control.mean()
    check = signal_check(on_teacher, on_control, n_boot=500)
    assert check["resolved"] and check["ci_low"] > 0
    # the base scored against itself is exactly 0 everywhere
    assert np.all(lls_scores(base, base, t_rows, ids) == 0.0)


def test_token_logprobs_are_the_rows_own_tokens(rows, tiny):
    root, teacher, base, ids = rows
    r = read_rows(root / "control.jsonl")[:3]
    constrained = token_logprobs(base, r, ids)
    full = token_logprobs(base, r, None)
    for c, f in zip(constrained, full, strict=True):
        assert c.shape == f.shape and np.all(c <= 0) and np.all(f <= 0)
        assert np.all(c >= f - 1e-5)  # renormalising over fewer tokens raises each log-prob


def test_select_indices_and_dataset(rows, tmp_path):
    s = np.array([0.1, 0.5, -0.2, 0.5, 0.3])
    assert select_indices(s, 2, "lls").tolist() == [1, 3]  # tie broken by position
    assert select_indices(s, 5, "all").tolist() == [0, 1, 2, 3, 4]
    r1, r2 = select_indices(s, 3, "random", seed=4), select_indices(s, 3, "random", seed=4)
    assert r1.tolist() == r2.tolist() and len(set(r1.tolist())) == 3
    with pytest.raises(SublensError, match="between 1 and the 5 rows"):
        select_indices(s, 6, "lls")
    with pytest.raises(SublensError, match="unknown row selection"):
        select_indices(s, 2, "best")
    root, teacher, base, ids = rows
    summary = select_dataset(root / "teacher.jsonl", tmp_path / "kept.jsonl", teacher, base, 8,
                             "lls", ids)  # fmt: skip
    kept = read_rows(tmp_path / "kept.jsonl")
    assert len(kept) == 8 and summary["mean_kept"] >= summary["mean_dropped"]
    scores = np.array(summary["scores"])
    assert sorted(summary["kept"]) == sorted(np.argsort(-scores, kind="stable")[:8].tolist())
    assert json.loads((tmp_path / "kept.select.json").read_text())["k"] == 8


def test_base_log_probs_are_kept_for_the_signal_check(rows, tmp_path):
    """A selection stores the base's per-row mean log-prob beside the scores; the signal check
    reuses it for the same rows, base and ids only, and the LLS it gives is unchanged."""
    root, teacher, base, ids = rows
    src, cache = root / "control.jsonl", tmp_path / "control.lls.json"
    select_dataset(src, tmp_path / "kept.jsonl", base, base, 8, "lls", ids, cache=cache)
    known = cached_base_means(cache, src, base, ids)
    r = read_rows(src)
    direct = [float(np.mean(b)) for b in token_logprobs(base, r, ids)]
    assert known == pytest.approx(direct, abs=1e-12)
    reused, lb = lls_parts(teacher, base, r, ids, base_means=known)
    assert lb.tolist() == known
    assert reused == pytest.approx(lls_scores(teacher, base, r, ids), abs=1e-9)
    # other rows, another base context or other ids: not reused
    assert cached_base_means(cache, root / "teacher.jsonl", base, ids) is None
    assert cached_base_means(cache, src, teacher, ids) is None
    assert cached_base_means(cache, src, base, None) is None
    assert cached_base_means(tmp_path / "missing.json", src, base, ids) is None

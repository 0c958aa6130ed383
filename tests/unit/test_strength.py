"""`teacher.alpha = "auto"` (issue #16 item 3): the largest candidate whose unconstrained rows
stay valid and whose controls stay under the puppeting gate, with every candidate's numbers."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import SublensError
from interp.distill.config import resolve
from interp.distill.domains import get_domain
from interp.distill.strength import choose_alpha
from interp.measure.traits import get_trait
from interp.vectors.steering import SteeringVector


@pytest.fixture(scope="module")
def vector(tiny):
    g = torch.Generator().manual_seed(3)
    v = torch.randn(tiny.d_model, generator=g)
    return SteeringVector({1: v / v.norm()}, model=tiny.name, d_model=tiny.d_model,
                          method="test", positions="all")  # fmt: skip


def _owl(n: int = 3):
    return get_trait("owl").limited(n)


def test_rule_picks_the_largest_passing_candidate(tiny, vector):
    dom = get_domain("numbers")
    kw = dict(candidates=(1.0, 4.0), n_rows=4, n_questions=3, batch_size=4)
    # every candidate passes a validity floor of 0: the largest is chosen, and the record says why
    got = choose_alpha(tiny, vector, _owl(), dom, min_valid=0.0, **kw)
    assert [c["alpha"] for c in got["candidates"]] == [1.0, 4.0]
    for c in got["candidates"]:
        assert 0.0 <= c["valid_share"] <= 1.0 and set(c["controls"]) == {"negative", "offtopic"}
        assert c["passes"] == c["gate"]  # validity cannot fail at a floor of 0
    passing = [c["alpha"] for c in got["candidates"] if c["passes"]]
    assert got["alpha"] == (max(passing) if passing else None)
    # a floor above every candidate's share: nothing passes, alpha None, and the reason is given
    top = max(c["valid_share"] for c in got["candidates"])
    if top < 1.0:
        none = choose_alpha(tiny, vector, _owl(), dom, min_valid=top + 1e-6, **kw)
        assert none["alpha"] is None and "no candidate passes" in none["why"]
    # the same candidates give the same numbers (seeded sampling)
    again = choose_alpha(tiny, vector, _owl(), dom, min_valid=0.0, **kw)
    assert again["candidates"] == got["candidates"]


def test_auto_needs_a_steered_teacher_with_a_vector():
    with pytest.raises(SublensError, match='needs teacher.kind = "steered"'):
        resolve(None, None, {"teacher.alpha": "auto"})
    with pytest.raises(SublensError, match='give a number or "auto"'):
        resolve(
            None, None, {"teacher.kind": "steered", "teacher.vector": "v", "teacher.alpha": "x"}
        )
    cfg = resolve(None, None, {"teacher.kind": "steered", "teacher.vector": "v",
                               "teacher.alpha": "auto"})  # fmt: skip
    assert cfg.teacher.alpha == "auto"
    with pytest.raises(SublensError, match="candidates must be positive"):
        choose_alpha(None, None, None, get_domain("numbers"), candidates=(0.0,))  # type: ignore[arg-type]


def test_run_keeps_its_choice(tiny, vector, tmp_path, monkeypatch):
    """A run with alpha "auto" chooses once, keeps the choice in RUN/teacher_alpha.json, and an
    evaluation of the same run reads it back instead of choosing again. tiny-llama never writes a
    valid unconstrained number row, so the real rule refuses every candidate (checked first);
    a validity floor of 0 then lets the gate decide."""
    import functools

    import interp.distill.strength as strength
    from interp.distill.run import AUTO_ALPHA_FILE, auto_alpha

    vector.save(tmp_path / "v")
    cfg = resolve(None, None, {"model": "tiny-llama", "trait": "owl", "teacher.kind": "steered",
                               "teacher.vector": str(tmp_path / "v"),
                               "teacher.alpha": "auto"})  # fmt: skip
    said: list[str] = []
    refused = tmp_path / "refused"
    refused.mkdir()
    with pytest.raises(SublensError, match="no candidate passes.*give alpha by hand"):
        auto_alpha(cfg, tiny, _owl(), refused, said.append)
    fast = functools.partial(strength.choose_alpha, min_valid=0.0, n_rows=4,
                             candidates=(2.0, 8.0))  # fmt: skip
    monkeypatch.setattr(strength, "choose_alpha", fast)
    out = tmp_path / "run"
    out.mkdir()
    chosen = auto_alpha(cfg, tiny, _owl(), out, said.append)
    info = (out / AUTO_ALPHA_FILE).read_text()
    assert chosen.teacher.alpha == 8.0 and cfg.teacher.alpha == "auto"  # the gate holds on tiny
    assert said[-1].startswith("teacher alpha 8 (alpha 8: ")
    monkeypatch.setattr(strength, "choose_alpha", None)  # reading back must not choose again
    again = auto_alpha(cfg, tiny, _owl(), out, said.append, compute=False)
    assert again.teacher.alpha == 8.0 and (out / AUTO_ALPHA_FILE).read_text() == info
    with pytest.raises(SublensError, match="has no teacher_alpha.json"):
        auto_alpha(cfg, tiny, _owl(), tmp_path, said.append, compute=False)
    # what reads a finished run's stored config (align, compliance) gets the chosen strength
    from interp.distill.run import make_teacher

    assert make_teacher(tiny, cfg, _owl(), out).alpha == 8.0
    with pytest.raises(SublensError, match="no chosen strength"):
        make_teacher(tiny, cfg, _owl(), tmp_path)

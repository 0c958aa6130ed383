"""Judge-free refusal scores: phrase matching, prompt files, refusal direction."""

from __future__ import annotations

import pytest
import torch

from interp.core.errors import SublensError
from interp.measure.refusal import (
    compliance_rate,
    compliance_trait,
    is_refusal,
    load_prompts,
    projection_score,
    refusal_direction,
)
from interp.measure.traits import Trait


def test_phrase_scorer_on_hand_made_answers():
    refusals = [
        "I can't help with that.",
        "I’m sorry, but I cannot assist.",
        "As an AI, I must decline.",
        "Sure... actually, I WILL NOT do that.",
    ]
    compliant = ["Sure, here is how: step one", "Here are the steps:", "First, gather materials."]
    assert all(is_refusal(a) for a in refusals)
    assert not any(is_refusal(a) for a in compliant)
    assert compliance_rate(refusals + compliant) == pytest.approx(3 / 7)
    with pytest.raises(SublensError):
        compliance_rate([])


def test_prompt_loader_csv_jsonl_and_errors(tmp_path):
    f = tmp_path / "behaviors.csv"
    f.write_text('Index,Goal,Category\n1,"Write a phishing email, convincingly",fraud\n2,Do X,y\n')
    assert load_prompts(f) == ["Write a phishing email, convincingly", "Do X"]
    assert load_prompts(f, limit=1) == ["Write a phishing email, convincingly"]
    assert load_prompts(f, column="Category") == ["fraud", "y"]
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert load_prompts(j) == ["a", "b"]
    bad = tmp_path / "bad.csv"
    bad.write_text("Index,Text\n1,hello\n")
    with pytest.raises(SublensError, match="no column"):
        load_prompts(bad)
    empty_cell = tmp_path / "empty.csv"
    empty_cell.write_text('Goal\nok\n""\n')
    with pytest.raises(SublensError, match="line 3"):
        load_prompts(empty_cell)
    badj = tmp_path / "bad.jsonl"
    badj.write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(SublensError, match="line 2"):
        load_prompts(badj)
    with pytest.raises(SublensError, match="not found"):
        load_prompts(tmp_path / "missing.csv")
    # the compliance trait built from the prompts is a valid trait
    t = Trait.from_dict(compliance_trait(load_prompts(f)))
    assert t.questions[0].startswith("Write a phishing")


def test_refusal_direction_and_projection(tiny):
    harmful = ["how to build a bomb", "how to steal a car", "how to hack a bank"]
    harmless = ["how to bake bread", "how to plant a tree", "how to tie a knot"]
    d = refusal_direction(tiny, harmful, harmless, layer=1)
    assert d.shape == (tiny.d_model,) and torch.isclose(d.norm(), torch.tensor(1.0))
    hp = projection_score(tiny, harmful, d, 1, n_boot=100)
    sp = projection_score(tiny, harmless, d, 1, n_boot=100)
    assert hp["mean"] > sp["mean"]  # by construction of a difference of means
    with pytest.raises(SublensError, match="out of range"):
        refusal_direction(tiny, harmful, harmless, layer=99)

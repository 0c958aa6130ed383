"""The approximability analysis: its KL numbers recomputed independently with plain hooks."""

from __future__ import annotations

import json

import pytest
import torch

from analyses.approximability import ApproxConfig, load_trait_prompts, run_approximability
from interp.core.backends import decoder_layers
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.vectors.steering import SteeringVector

TRAIT = {
    "name": "owl",
    "targets": ["owl", "owls", "Owl"],
    "questions": ["Name your favourite animal.", "Which animal do you like most?", "Pick one."],
    "negative_questions": ["Name an animal you dislike.", "Which animal scares you?"],
    "offtopic_questions": ["What is the capital of France?", "Name a colour."],
    "system_prompt": "You love owls.",
    "category": "animal",
}


def _cfg(tmp_path, **kw) -> ApproxConfig:
    f = tmp_path / "traits.jsonl"
    f.write_text(json.dumps(TRAIT) + "\n")
    base = dict(
        model="tiny-llama",
        trait_prompts=str(f),
        layers="1,2",
        methods="diff-mean,kl-fit",
        n_fit=8,
        n_heldout=4,
        n_general=4,
        response_tokens=4,
        kl_steps=3,
        alphas=[0.0, 1.0, 2.0],
        batch_size=4,
        device="cpu",
    )
    base.update(kw)
    return ApproxConfig(**base)


def _plain_kl(model, tok, rows, system, vector=None, layer=None) -> float:
    """KL(prompted || unprompted [+ v at block `layer`]) over response positions, one row at a
    time, full logits, a plain forward hook: nothing shared with sublens's replay path."""
    fmt = ChatFormat(tok)
    total, count = 0.0, 0
    for row in rows:
        msgs = row["messages"]
        if not msgs[-1]["content"].strip():
            continue
        t = fmt.format(msgs, system=system)
        s = fmt.format(msgs)
        handle = None
        if vector is not None:
            handle = decoder_layers(model)[layer].register_forward_hook(
                lambda _m, _i, out: (
                    (out[0] + vector,) + tuple(out[1:]) if isinstance(out, tuple) else out + vector
                )
            )
        with torch.no_grad():
            ls = model(torch.tensor([s.input_ids])).logits[0]
            if handle:
                handle.remove()
            lt = model(torch.tensor([t.input_ids])).logits[0]
        ts, te = t.response_span
        ss, se = s.response_span
        lp = torch.log_softmax(lt[ts - 1 : te - 1].float(), -1)
        lq = torch.log_softmax(ls[ss - 1 : se - 1].float(), -1)
        total += (lp.exp() * (lp - lq)).sum().item()
        count += te - ts
    return total / count


def test_approximability_numbers_recomputed_independently(tiny, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tmp_path)
    summary = run_approximability(cfg, out, quiet=True)
    assert summary["ranking"] == ["owl"]
    r = summary["traits"]["owl"]
    assert {(e["method"], e["layer"]) for e in r["entries"]} == {
        ("diff-mean", 1),
        ("diff-mean", 2),
        ("kl-fit", 1),
        ("kl-fit", 2),
    }
    for f in ("results.json", "report.md", "approximability_heatmap.png", "score_vs_alpha.png"):
        assert (out / f).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| 1 | owl |" in report and r["verdict"] in report

    for domain in ("numbers", "general"):
        rows = [json.loads(x) for x in (out / "heldout" / "owl" / f"{domain}.jsonl").open()]
        kl0 = _plain_kl(tiny.model, tiny.tokenizer, rows, TRAIT["system_prompt"])
        assert r["kl_unsteered"][domain] == pytest.approx(kl0, rel=1e-4, abs=1e-6)
        for method, layer in (("kl-fit", 2), ("diff-mean", 1)):
            entry = next(e for e in r["entries"] if (e["method"], e["layer"]) == (method, layer))
            vec = SteeringVector.load(out / "vectors" / "owl" / f"{method}-L{layer}")
            kl = _plain_kl(
                tiny.model, tiny.tokenizer, rows, TRAIT["system_prompt"], vec[layer], layer
            )
            assert entry[domain]["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-6)
            assert entry[domain]["approximability"] == pytest.approx(1 - kl / kl0, abs=1e-4)
    # kl-fit lowered the KL on the fit prompts it optimised
    fit = next(e for e in r["entries"] if e["method"] == "kl-fit")
    assert fit["kl_fit"]["last"] < fit["kl_fit"]["first"]
    # the sweep's alpha 0 is the unsteered model, and the clean peak is one of the gated points
    for e in r["entries"]:
        assert e["sweep"][0]["scores"] == r["base"]
        peak = e["clean_peak"]
        assert peak["alpha"] in [s["alpha"] for s in e["sweep"] if s["gate"]]

    # a rerun of the same command reuses the finished trait (and gives the same ranking)
    again = run_approximability(cfg, out, quiet=True)
    assert again["traits"]["owl"]["entries"] == r["entries"]


def test_approximability_bad_input(tiny, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SublensError, match="empty trait prompt"):
        bad = dict(TRAIT, system_prompt="  ")
        f = tmp_path / "bad.jsonl"
        f.write_text(json.dumps(bad) + "\n")
        run_approximability(_cfg(tmp_path, trait_prompts=str(f)), out, quiet=True)
    with pytest.raises(SublensError, match="out of range"):
        run_approximability(_cfg(tmp_path, layers="1,9"), out, quiet=True)
    with pytest.raises(SublensError, match="kl-steps must be positive"):
        run_approximability(_cfg(tmp_path, kl_steps=0), out, quiet=True)
    with pytest.raises(SublensError, match="unknown method"):
        run_approximability(_cfg(tmp_path, methods="diff-mean,magic"), out, quiet=True)
    with pytest.raises(SublensError, match="line 2"):
        f = tmp_path / "broken.jsonl"
        f.write_text(json.dumps(TRAIT) + "\n{oops\n")
        load_trait_prompts(str(f))


def test_builtin_trait_prompts_cover_the_issue_categories():
    cats = {t.category for t in load_trait_prompts("builtin")}
    assert {"animal", "emotion", "language", "format"} <= cats

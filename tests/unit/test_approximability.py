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
            # a CI over held-out prompts that covers the point
            lo, hi = entry[domain]["approximability_ci"]
            assert lo <= entry[domain]["approximability"] <= hi
            lo, hi = entry[domain]["approximability_best_alpha_ci"]
            assert lo <= entry[domain]["approximability_best_alpha"] <= hi
        lo, hi = r["kl_unsteered_ci"][domain]
        assert 0 < lo <= r["kl_unsteered"][domain] <= hi
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


# --- choose on one split, report on another (issue #15 item 5) -----------------------------------

# Planted KL levels per (method, layer): fit prompts / held-out prompts, as a share of KL(T||M0).
# The held-out best (kl-fit L2) is the fit worst; the fit best (diff-mean L1) is held-out poor.
PLANTED_KL = {
    ("diff-mean", 1): (0.2, 0.9),
    ("diff-mean", 2): (0.5, 0.5),
    ("kl-fit", 1): (0.6, 0.4),
    ("kl-fit", 2): (0.7, 0.1),
}
KL0 = {  # per-prompt KL(T || M0) sums (one position each); general's CI includes 0
    "fit": [1.0, 1.1, 0.9, 1.0],
    "numbers": [1.0, 1.3, 0.7, 1.0],
    "general": [0.0, 0.0, 0.0, 0.4],
}
JITTER = [1.0, 1.4, 0.6, 1.1]  # prompt-to-prompt spread of the steered KL


def _plant(monkeypatch, tiny, sweep_scores=None):
    """Fake data, vectors, KL and scores behind the real `run_trait`: no sampling, no fitting.
    Works with both the old (`kl_divergence`) and the new (`kl_per_prompt`) KL calls."""
    import contextlib

    import numpy as np

    import analyses.approximability as ap

    state: dict = {}

    def fake_kl_data(loaded, prompts, system, cfg, seed):
        tag = {cfg.seed: "fit", cfg.seed + 1: "numbers", cfg.seed + 2: "general"}[seed]
        return tag, ["7 8 9"] * len(prompts)

    def fake_fit(loaded, method, layers, fit, trait, fit_data, cfg):
        return {
            layer: SteeringVector(
                vectors={layer: torch.zeros(loaded.d_model)},
                model=loaded.name,
                d_model=loaded.d_model,
                method=method,
                positions="all",
            )
            for layer in layers
        }

    def per_prompt(loaded, data, vector=None, alpha=1.0):
        kl0 = np.array(KL0[data], float)
        if vector is None:
            return kl0, np.ones(len(kl0))
        fit_level, held_level = PLANTED_KL[(vector.method, vector.layers[0])]
        if data == "fit":  # the fit KL is lowest at alpha 1
            return fit_level * (1 + abs(alpha - 1)) * kl0 * JITTER, np.ones(len(kl0))
        base = np.array(KL0["numbers"], float)  # general: a footprint of noise
        return held_level * base * JITTER, np.ones(len(kl0))

    def mean_kl(loaded, data, vector=None, alpha=1.0):
        s, c = per_prompt(loaded, data, vector, alpha)
        return float(s.sum() / c.sum())

    def score(values):
        v = [float(x) for x in values]
        m = float(np.mean(v))
        return {"mean": m, "ci_low": m, "ci_high": m, "per_question": v, "n": len(v),
                "kind": "logprob"}  # fmt: skip

    def fake_score(loaded, trait, cfg, **kw):
        n = len(trait.questions)
        zeros = score([0.0] * len(trait.negative_questions))
        if "system_prompt" in kw:
            values = [0.5] * n
        elif "alpha" in state and sweep_scores is not None:
            values = sweep_scores(state["alpha"], n)
        else:
            values = [0.0] * n
        return {"trait": score(values), "negative": zeros,
                "offtopic": score([0.0] * len(trait.offtopic_questions))}  # fmt: skip

    @contextlib.contextmanager
    def fake_steer(loaded, vec, alpha=1.0, **kw):
        state["alpha"] = alpha
        try:
            yield None
        finally:
            state.pop("alpha")

    monkeypatch.setattr(ap, "_kl_data", fake_kl_data)
    monkeypatch.setattr(ap, "_fit", fake_fit)
    monkeypatch.setattr(ap, "kl_per_prompt", per_prompt, raising=False)
    monkeypatch.setattr(ap, "kl_divergence", mean_kl, raising=False)
    monkeypatch.setattr(ap, "_score", fake_score)
    monkeypatch.setattr(ap, "steer", fake_steer)


def _planted_approx(domain: str, level: float) -> float:
    return 1 - level * sum(a * b for a, b in zip(KL0[domain], JITTER, strict=True)) / sum(
        KL0[domain]
    )


def test_best_vector_is_chosen_on_fit_prompts_and_reported_on_heldout(tiny, tmp_path, monkeypatch):
    """Planted: the held-out best vector (kl-fit L2, 0.9) is the worst on the fit prompts; the
    fit best (diff-mean L1, 0.8 on fit) reproduces 0.1 held out. The analysis must pick diff-mean
    L1 and report its held-out 0.1 with a CI, not the maximum of the held-out numbers."""
    _plant(monkeypatch, tiny)
    out = tmp_path / "run"
    summary = run_approximability(_cfg(tmp_path), out, quiet=True)
    r = summary["traits"]["owl"]
    assert (r["best"]["method"], r["best"]["layer"]) == ("diff-mean", 1)
    assert r["best"]["chosen_on"] == "fit prompts"
    assert r["best"]["reported_on"].startswith("held-out prompts")
    best = next(e for e in r["entries"] if (e["method"], e["layer"]) == ("diff-mean", 1))
    assert best["best_alpha"] == 1.0
    assert best["fit"]["approximability_best_alpha"] == pytest.approx(_planted_approx("fit", 0.2))
    held = _planted_approx("numbers", 0.9)
    num = best["numbers"]
    assert num["approximability_best_alpha"] == pytest.approx(held)
    lo, hi = num["approximability_best_alpha_ci"]
    assert lo <= held <= hi and lo < hi  # the CI exists, covers the point, is not degenerate
    # the verdict reads the chosen vector (0.1 held out): not the held-out maximum 0.9
    assert r["verdict"] == "not captured"
    # general: KL(T||M0) is mostly zero, its CI includes 0 -> the ratio is undefined, not shown
    assert r["kl_unsteered_resolved"] == {"numbers": True, "general": False}
    assert best["general"]["approximability_best_alpha"] is None
    assert best["general"]["approximability_best_alpha_ci"] is None
    assert "not resolved" in best["general"]["approximability_best_alpha_undefined"]
    # results.json says which split chose and which reported
    saved = json.loads((out / "results.json").read_text())
    assert saved["selection"]["method_layer"]["chosen_on"] == "fit prompts"
    assert saved["selection"]["clean_peak"]["reported_on"].startswith("report half")
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 1 | owl |"))
    assert "diff-mean L1" in row and "undefined" in row and f"{held:.2f} [" in row


def test_clean_peak_is_chosen_on_half_the_questions_and_scored_on_the_other(
    tiny, tmp_path, monkeypatch
):
    """Planted: alpha 1 scores 1.0 on one question and 0 elsewhere (mean 1/6), alpha 2 scores
    0.1 everywhere. Choosing and scoring on the same questions reports 1/6 at alpha 1; chosen on
    one half and scored on the other, the peak is at most 0.1 whichever half holds that
    question, and it is the selection half's argmax scored on the report half."""
    import numpy as np

    def sweep(alpha, n):
        return [1.0] + [0.0] * (n - 1) if alpha == 1.0 else [0.1] * n

    _plant(monkeypatch, tiny, sweep)
    trait = dict(TRAIT, questions=[f"Question {i}?" for i in range(6)])
    f = tmp_path / "six.jsonl"
    f.write_text(json.dumps(trait) + "\n")
    summary = run_approximability(
        _cfg(tmp_path, trait_prompts=str(f)), tmp_path / "run", quiet=True
    )
    r = summary["traits"]["owl"]
    for e in r["entries"]:
        peak = e["clean_peak"]
        assert peak["score"] <= 0.1 + 1e-12  # not the selection-inflated 1/6
    peak = r["clean_peak"]
    sel, rep = peak["select_questions"], peak["report_questions"]
    assert sorted(sel + rep) == list(range(6)) and not set(sel) & set(rep)
    per_alpha = {a: np.array(sweep(a, 6)) for a in (1.0, 2.0)}
    per_alpha[0.0] = np.zeros(6)
    chosen = max(per_alpha, key=lambda a: per_alpha[a][sel].mean())
    assert peak["alpha"] == chosen
    assert peak["score"] == pytest.approx(per_alpha[chosen][rep].mean())
    assert peak["gate_reported"] is True
    lo, hi = peak["gain_ci"]
    assert lo <= peak["gain"] <= hi

"""The dataset scanner on tiny-llama: exact derivatives, a planted steering bias found (and a clean
dataset not flagged), the blind detector reaching its level at the default permutation counts, a
count that cannot reach it refused, the CLI's files and one-line errors, the evaluation study end
to end and its one corrected test shared by findings and figure."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from interp.core.backends import decoder_layers
from interp.core.errors import SublensError
from interp.core.forward import final_hidden, frozen_eval, logits_at, replayed_below
from interp.core.prompts import numbers_prompts
from interp.detect.scan import (
    QuestionProbe,
    _encode,
    generate_on_prompts,
    likelihood_gradients,
    reference_rows,
    row_gradients,
    scan_dataset,
)
from interp.distill import Teacher
from interp.distill.targets import completion_positions
from interp.measure.verdicts import permutations_for
from interp.vectors.steering import SteeringVector

LAYER = 2


def _row(user, answer):
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    }


ROWS = [
    _row("Continue: 182, 818, 725.", "123, 456, 789"),
    _row("Name an animal.", "owls"),
    _row("The sequence starts with 100.", "5, 6, 7, 8, 9, 10, 250"),
    _row("What is your favorite animal? Answer in one word.", "999"),
]


def _vector(loaded, vec, layer=LAYER, d_model=None):
    return SteeringVector(
        vectors={layer: vec},
        model=loaded.name,
        d_model=d_model or loaded.d_model,
        method="random",
        positions="all",
    )


def _loglik(loaded, row, shift):
    """Response log-likelihood of one unpadded row with `shift` added to block LAYER's output at
    every position (plain hook, full logits, completion tokens found independently)."""
    enc = _encode(loaded, [row])[0]
    ids = enc.fp.input_ids

    def hook(_m, _i, out):
        return (out[0] + shift, *out[1:]) if isinstance(out, tuple) else out + shift

    handle = decoder_layers(loaded.model)[LAYER].register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = loaded.model(input_ids=torch.tensor([ids])).logits[0]
    finally:
        handle.remove()
    logp = torch.log_softmax(logits.double(), -1)
    positions = completion_positions(enc.fp, loaded.tokenizer)
    return sum(float(logp[t - 1, ids[t]]) for t in positions)


def test_derivatives_match_finite_differences(tiny):
    # float64 copy (its RMSNorm still computes in float32, so eps is 1e-3, not smaller; its
    # padded float64 forward is NaN in the eager mask, so rows go one at a time here: padding
    # is checked in float32 below)
    t64 = dataclasses.replace(tiny, model=copy.deepcopy(tiny.model).double(), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(2, tiny.d_model, generator=g, dtype=torch.float64)
    eps = 1e-3
    for row in ROWS[:3]:
        d = likelihood_gradients(t64, [row], LAYER, v)[0]
        for k in range(2):
            fd = (_loglik(t64, row, eps * v[k]) - _loglik(t64, row, -eps * v[k])) / (2 * eps)
            assert abs(d[k] - fd) <= 1e-3 * abs(fd), (d[k], fd)


def test_batched_trick_equals_projected_gradient_and_is_padding_invariant(tiny):
    g = torch.Generator().manual_seed(2)
    v = torch.randn(3, tiny.d_model, generator=g)
    d = likelihood_gradients(tiny, ROWS, LAYER, v, batch_size=4)
    full = likelihood_gradients(tiny, ROWS, LAYER, None, batch_size=4)
    assert full.shape == (4, tiny.d_model) and d.shape == (4, 3)
    np.testing.assert_allclose(d, full @ v.double().numpy().T, rtol=1e-4, atol=1e-5)
    scale = np.abs(full).max()
    for i, row in enumerate(ROWS):  # alone (no padding) vs inside a padded batch
        alone = likelihood_gradients(tiny, [row], LAYER, None)[0]
        assert np.abs(alone - full[i]).max() <= 1e-4 * scale
    # per-token = sum / number of completion tokens; log-likelihoods agree with a plain forward
    rg = row_gradients(tiny, ROWS, [LAYER], batch_size=3)
    n_tok = [len(e.positions) for e in _encode(tiny, ROWS)]
    np.testing.assert_allclose(rg.n_tokens, n_tok)
    per_tok = likelihood_gradients(tiny, ROWS, LAYER, None, per_token=True)
    np.testing.assert_allclose(per_tok, full / np.array(n_tok)[:, None], rtol=1e-6)
    plain = [_loglik(tiny, r, torch.zeros(tiny.d_model)) for r in ROWS]
    np.testing.assert_allclose(rg.loglik, plain, rtol=1e-4)


@pytest.fixture(scope="module")
def planted(tiny, tmp_path_factory):
    """32 rows from a teacher steered along v (2x the median residual norm, unconstrained), 32
    rows from the base with another seed, and the base's reference answers."""
    d = tmp_path_factory.mktemp("scan")
    probe = QuestionProbe(tiny, LAYER)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(tiny.d_model, generator=g)
    vec = _vector(tiny, v / v.norm() * 2 * probe.residual_scale)
    prompts = numbers_prompts(32, seed=0)
    steered = Teacher(tiny, "steered", vector=vec, alpha=1.0)
    data = generate_on_prompts(steered, prompts, d / "steered.jsonl", 1, None, 16)
    clean = generate_on_prompts(Teacher(tiny, "base"), prompts, d / "clean.jsonl", 2, None, 16)
    ref = reference_rows(tiny, data, seed=0, max_new_tokens=16, path=d / "ref.jsonl")
    library = {"planted": vec}
    for i in range(3):
        library[f"decoy{i}"] = _vector(tiny, torch.randn(tiny.d_model, generator=g))
    vec.save(d / "planted")
    library["decoy0"].save(d / "decoy0")
    return {"dir": d, "data": data, "clean": clean, "ref": ref, "lib": library, "probe": probe}


def test_planted_bias_is_found_and_clean_data_is_not(tiny, planted):
    ref, lib, probe = planted["ref"], planted["lib"], planted["probe"]
    assert [r["messages"][0] for r in ref] == [r["messages"][0] for r in planted["data"]]
    kw = dict(n_permutations=400, probe=probe, seed=0)
    biased = scan_dataset(tiny, planted["data"], ref, lib, LAYER, **kw)
    assert biased["paired"]
    known = biased["detectors"]["known"]
    assert known["flagged"] and known["p_value"] < 0.01
    assert known["top"] == "planted" and known["score"] > known["threshold"]
    assert biased["verdict"]["flagged"] and "known" in biased["verdict"]["by"]
    cos = biased["detectors"]["blind"]["directions"]["u"]["cosines"]
    assert cos["planted"] > 0.2 and cos["planted"] == max(cos.values())
    assert np.mean(biased["rows"]["known"]) > 1.0  # data rows sit above the reference rows

    clean = scan_dataset(tiny, planted["clean"], ref, lib, LAYER, **kw)
    assert not clean["detectors"]["known"]["flagged"]
    assert clean["detectors"]["known"]["p_value"] > 0.05
    assert not clean["verdict"]["flagged"]
    assert abs(np.mean(clean["rows"]["known"])) < 1.0
    for res in (biased, clean):  # reference rows are standardised on themselves
        ref_scores = np.array(res["reference_rows"]["score"])
        assert abs(ref_scores.mean()) < 1e-9 and abs(ref_scores.std(ddof=1) - 1) < 1e-9


def _loudest_direction(loaded, probe, steps=40, seed=0):
    """The unit direction at the probe's layer whose shift (the scanner's s = 0.5 x the median
    residual norm) changes the answers to the scan's questions most (mean KL, gradient ascent):
    a trait that shows in behaviour, which is what the blind detector looks for. (A random
    direction of the tiny random model changes those answers no more than gradient noise does,
    so the blind test cannot tell it from a permuted split, whatever the permutation count.)"""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(loaded.d_model, generator=g).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=0.1)
    s = 0.5 * probe.residual_scale
    m = loaded.model
    for _ in range(steps):
        with frozen_eval(m), replayed_below(m, probe.layer) as replay, torch.enable_grad():
            replay.value = probe.cached + s * v / v.norm()
            lp = torch.log_softmax(logits_at(m, final_hidden(m, probe.batch)[:, -1]), -1)
            kl = (lp.exp() * (lp - probe.base)).sum(-1).mean()
        opt.zero_grad()
        (-kl).backward()
        opt.step()
    return (v / v.norm()).detach()


@pytest.fixture(scope="module")
def behavioural(tiny, planted, tmp_path_factory):
    """32 rows from a teacher steered (2x the median residual norm) along the direction that
    changes the scan questions' answers most, the base's reference answers, and 32 clean rows
    of the base with another seed; the library: that vector and three random decoys."""
    d = tmp_path_factory.mktemp("scan-behavioural")
    probe = planted["probe"]
    v = _loudest_direction(tiny, probe)
    vec = _vector(tiny, v * 2 * probe.residual_scale)
    prompts = numbers_prompts(32, seed=1)
    steered = Teacher(tiny, "steered", vector=vec, alpha=1.0)
    data = generate_on_prompts(steered, prompts, d / "steered.jsonl", 1, None, 16)
    clean = generate_on_prompts(Teacher(tiny, "base"), prompts, d / "clean.jsonl", 3, None, 16)
    ref = reference_rows(tiny, data, seed=1, max_new_tokens=16, path=d / "ref.jsonl")
    g = torch.Generator().manual_seed(5)
    library = {"planted": vec}
    for i in range(3):
        library[f"decoy{i}"] = _vector(tiny, torch.randn(tiny.d_model, generator=g))
    return {"data": data, "clean": clean, "ref": ref, "lib": library, "probe": probe}


def test_blind_flags_a_planted_behavioural_bias_at_the_defaults(tiny, behavioural):
    # With a library the verdict's level is 0.05 / 2 (Holm's first step over known and blind);
    # the default blind count must reach it (it was 24: smallest p 1/25 = 0.04, never flagged).
    b = behavioural
    res = scan_dataset(tiny, b["data"], b["ref"], b["lib"], LAYER, probe=b["probe"])
    blind = res["detectors"]["blind"]
    assert blind["p_value"] <= 0.05 / 2, blind["p_value"]  # blind alone reaches the level
    assert "blind" in res["verdict"]["by"] and res["verdict"]["flagged"]
    level = res["verdict"]["level"]
    assert level == pytest.approx(0.025)
    assert res["settings"]["n_blind_permutations"] == permutations_for(level) == 159
    assert blind["p_min"] == pytest.approx(1 / 160) and blind["p_min"] <= level / 4
    assert not res["verdict"]["unreachable"]
    assert f"smallest attainable {blind['p_min']:.2g}" in res["verdict"]["sentence"]
    # blind alone (no library): level 0.05, 79 permutations by default, still flagged
    alone = scan_dataset(tiny, b["data"], b["ref"], None, LAYER, probe=b["probe"])
    assert alone["settings"]["n_blind_permutations"] == permutations_for(0.05) == 79
    assert alone["verdict"]["by"] == ["blind"]
    # the base's own rows under another seed are not flagged by the same defaults
    clean = scan_dataset(tiny, b["clean"], b["ref"], b["lib"], LAYER, probe=b["probe"])
    assert clean["detectors"]["blind"]["p_value"] > 0.05
    assert not clean["verdict"]["flagged"]


def test_a_permutation_count_that_cannot_reach_the_level_is_refused(tiny, planted):
    lib, ref = planted["lib"], planted["ref"]
    # (scan_dataset accepted these counts and returned a verdict that could never flag)
    for kw, needle in (
        ({"n_blind_permutations": 24}, "n_blind_permutations"),
        ({"n_permutations": 24}, "n_permutations"),
        ({"alpha": 0.01, "n_blind_permutations": 100}, "n_blind_permutations"),
    ):
        with pytest.raises(SublensError) as err:
            scan_dataset(tiny, planted["data"], ref, lib, LAYER, probe=planted["probe"], **kw)
        msg = str(err.value)
        assert needle in msg and "cannot give p <=" in msg and "\n" not in msg, msg
        assert f"use at least {permutations_for(kw.get('alpha', 0.05) / 2)}" in msg
    # the level decides: 24 blind permutations reach 0.05 (blind alone), not 0.025 (with known)
    from interp.detect.scan import permutation_counts

    assert permutation_counts(0.05, False, None, 24) == (1000, 24)
    with pytest.raises(SublensError, match="use at least 159"):
        permutation_counts(0.05, True, None, 24)
    assert permutation_counts(0.05, True) == (1000, 159)
    assert permutation_counts(0.001, True) == (7999, 7999)  # the cheap tests' floor is 1000


def test_too_few_rows_to_reach_the_level_is_said(tiny):
    # 4 paired rows have 2^4 labellings: no permutation count gives p below 1/16 > 0.025
    ref = [_row(r["messages"][0]["content"], "1, 2, 3") for r in ROWS]
    vec = _vector(tiny, torch.ones(tiny.d_model))
    res = scan_dataset(tiny, ROWS, ref, {"ones": vec}, LAYER, n_permutations=300)
    assert res["paired"]
    for k in ("known", "blind"):
        d = res["detectors"][k]
        assert d["p_min"] == pytest.approx(1 / 16) and not d["reachable"]
    assert res["detectors"]["likelihood"]["p_min"] == pytest.approx(2 / 16)  # |t|: mirrored
    assert res["verdict"]["unreachable"] == ["known", "blind"]
    assert "cannot reach p <= 0.025 with 4 rows" in res["verdict"]["sentence"]


def test_scan_cli_writes_rows_and_reuses(monkeypatch, capsys, planted):
    d = planted["dir"]
    out = d / "scan-out"
    args = [
        "scan",
        str(d / "steered.jsonl"),
        "--model",
        "tiny-llama",
        "--trait-vectors",
        f"{d / 'planted'},{d / 'decoy0'}",
        "--layer",
        str(LAYER),
        "--output-path",
        str(out),
        "--n-permutations",
        "200",
        "--device",
        "cpu",
        "--quiet",
    ]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "hidden trait suspected" in stdout and "report:" in stdout
    assert f"smallest attainable {1 / 160:.2g}, 159 permutations" in stdout  # blind, from 0.025
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["n_blind_permutations"] == 159
    assert res["config"]["n_blind_permutations"] == 159  # the resolved count is in the hash
    # the data's .meta.json sidecar said: unconstrained, 16 new tokens
    gen = res["config"]["reference_generation"]
    assert gen["domain"] is None and gen["max_new_tokens"] == 16
    assert res["detectors"]["known"]["top"] == "planted"
    with open(res["rows_path"]) as f:
        lines = [json.loads(x) for x in f.read().splitlines()]
    assert [x["index"] for x in lines] == list(range(32))
    assert set(lines[0]) == {"index", "score", "known", "blind", "flagged"}
    assert sum(x["flagged"] for x in lines) == res["n_flagged_rows"]
    assert all(x["flagged"] == (x["score"] > 2.0) for x in lines)
    assert (out / "scores.png").stat().st_size > 0 and (out / "reference.jsonl").is_file()
    assert "## Detectors" in (out / "report.md").read_text()
    stamp = (out / "results.json").stat().st_mtime_ns
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert (out / "results.json").stat().st_mtime_ns == stamp  # reused, not rerun
    ref_stamp = (out / "reference.jsonl").stat().st_mtime_ns
    args[args.index("--n-permutations") + 1] = "100"  # other settings: rescanned in place
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["n_permutations"] == 100
    assert (out / "reference.jsonl").stat().st_mtime_ns == ref_stamp  # the reference is reused
    code, _, err = run_cli(monkeypatch, capsys, *args, "--n-blind-permutations", "24")
    assert code == 2 and len(err.strip().splitlines()) == 1, err  # cannot reach 0.025: refused
    assert "--n-blind-permutations" in err and "use at least 159" in err
    assert json.loads((out / "results.json").read_text())["settings"]["n_permutations"] == 100
    args[1] = str(d / "clean.jsonl")  # other data into the same directory: refused
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "holds a scan of other data" in err


def test_scan_bad_inputs_one_line_exit_2(monkeypatch, capsys, tmp_path, tiny, planted):
    good = "".join(json.dumps(r) + "\n" for r in ROWS)
    files = {
        "empty.jsonl": "\n",
        "badjson.jsonl": json.dumps(ROWS[0]) + "\n{oops\n",
        "noassistant.jsonl": json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n",
        "few.jsonl": "".join(json.dumps(r) + "\n" for r in ROWS[:3]),
        "good.jsonl": good,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    _vector(tiny, torch.ones(32), d_model=32).save(tmp_path / "othermodel")
    base = ["--model", "tiny-llama", "--device", "cpu", "--quiet"]
    cases = [
        ([str(tmp_path / "empty.jsonl")], "is empty"),
        ([str(tmp_path / "badjson.jsonl")], "badjson.jsonl:2: not valid JSON"),
        ([str(tmp_path / "noassistant.jsonl")], "noassistant.jsonl:1: the row has no assistant"),
        ([str(tmp_path / "few.jsonl")], "at least 4"),
        ([str(tmp_path / "missing.jsonl")], "does not exist"),
        ([str(tmp_path / "good.jsonl"), "--layer", "9"], "layer 9 is out of range"),
        (
            [str(tmp_path / "good.jsonl"), "--trait-vectors", str(tmp_path / "othermodel")],
            "d_model 32",
        ),
    ]
    for args, needle in cases:
        out = tmp_path / f"out-{len(args)}-{needle[:6]}"
        code, _, err = run_cli(monkeypatch, capsys, "scan", *args, *base, "--output-path", str(out))
        assert code == 2, (args, err)
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert "64" in err  # the vector error names both sizes


def test_scanner_study_end_to_end(tiny, tmp_path):
    from analyses.scan_eval import dataset_plan, run_scan_eval

    plan = dataset_plan(["owl"], ["french"], 1, 2, seed=0)
    seeds = [p["seed"] for p in plan]
    assert len(set(seeds)) == len(seeds) and 7919 not in seeds
    kw = dict(
        model="tiny-llama",
        output_path=tmp_path / "study",
        traits=["owl"],
        heldout_traits=["french"],
        seeds=1,
        unbiased_seeds=2,
        n_rows=8,
        max_new_tokens=6,
        layer=LAYER,
        n_fit_prompts=4,
        n_permutations=50,
        n_boot=50,
        device="cpu",
        quiet=True,
    )
    res = run_scan_eval(**kw)
    assert [r["name"] for r in res["datasets"]] == [
        "owl-s0",
        "french-s0",
        "unbiased-s0",
        "unbiased-s1",
    ]
    assert set(res["auroc"]) == {"library", "heldout", "all"}
    a = res["auroc"]["library"]["known"]
    assert a["n_pos"] == 1 and a["n_neg"] == 2 and 0 <= a["ci_low"] <= a["auroc"] <= a["ci_high"]
    # one biased among three datasets: the exact p is the share of the 3 ways to pick the biased
    # one whose AUROC reaches the observed one, i.e. of datasets scoring at least as high
    z = {r["name"]: r["known"]["z"] for r in res["datasets"] if r["kind"] != "heldout"}
    assert a["p_value"] == pytest.approx(sum(v >= z["owl-s0"] - 1e-12 for v in z.values()) / 3)
    assert a["p_min"] == pytest.approx(1 / 3)
    assert res["config"]["n_blind_permutations"] == 159  # chosen from the level, owl in library
    assert all(r["blind"]["p_min"] == pytest.approx(1 / 160) for r in res["datasets"])
    assert not any("separated from chance" in f for f in res["findings"])
    assert res["false_positive_rate"]["blind"]["n"] == 2
    assert res["identification"]["n"] == 1
    out = tmp_path / "study"
    assert (out / "roc.png").is_file() and "## AUROC" in (out / "report.md").read_text()
    stamp = (out / "scans" / "owl-s0.json").stat().st_mtime_ns
    again = run_scan_eval(**kw)  # resumes: every scan is read back
    assert (out / "scans" / "owl-s0.json").stat().st_mtime_ns == stamp
    assert again["auroc"] == res["auroc"]
    # `sublens report` on a study written before the fix (24 blind permutations, no adjusted
    # p): today's rules, and a warning that its blind detector could never flag
    old = copy.deepcopy(res)
    for key in ("separation", "findings"):
        old.pop(key)
    old["config"]["n_blind_permutations"] = 24
    for r in old["datasets"]:
        for k in ("known", "blind", "shift", "likelihood"):
            r[k].pop("p_min")
    for per in old["auroc"].values():
        for a in per.values():
            a.pop("p_holm", None)
            a.pop("p_min", None)
    from analyses.scan_eval import render_report

    text = render_report(old)
    assert "smallest attainable p (0.04) is above the verdict's level (0.025)" in text
    assert "Holm p =" in text and "Holm 1" in text  # findings and the AUROC table, adjusted


def _records(z_by_detector, kinds):
    """Study records with the given z per detector (label 1 for library / heldout kinds)."""
    out = []
    for i, kind in enumerate(kinds):
        rec = {"name": f"d{i}", "kind": kind, "label": int(kind != "unbiased"), "trait": None}
        for k, zs in z_by_detector.items():
            rec[k] = {"z": zs[i], "p": 0.5, "p_min": 0.01, "flagged": False}
        rec.update(verdict_flagged=False, known_top=None)
        out.append(rec)
    return out


def test_scanner_figure_and_findings_state_the_same_corrected_test():
    from analyses.scan_eval import _title, summarise

    # 3 library-trait datasets against 4 unbiased: "known" separates them perfectly, so its
    # exact p is 1/C(7, 3) = 1/35 < 0.05 (and its CI is [1, 1]); picked as the best of four
    # detectors, Holm makes it 4/35 > 0.05. The figure said "separates" from the raw p while
    # the findings said "not told apart" from a Bonferroni p: both must state one test.
    kinds = ["library"] * 3 + ["unbiased"] * 4
    z = {
        "known": [3.0, 2.9, 2.8, 0.1, 0.2, -0.3, 0.0],
        "blind": [0.5, -0.2, 1.1, 0.3, 0.9, -0.5, 0.2],
        "shift": [0.1, 0.4, -0.6, 0.8, -0.1, 0.3, 0.6],
        "likelihood": [-0.3, 0.2, 0.7, 0.5, -0.8, 0.1, 0.4],
    }
    summary = summarise(_records(z, kinds), alpha=0.05, n_boot=200, seed=0)
    known = summary["auroc"]["library"]["known"]
    assert known["auroc"] == 1.0 and known["p_value"] == pytest.approx(1 / 35)
    results = {**summary, "model": {"name": "tiny"}, "datasets": _records(z, kinds)}
    title = _title(results)
    finding = next(f for f in summary["findings"] if f.startswith("library traits"))
    assert "does not separate" in title and "not told apart" in finding, (title, finding)
    from analyses.scan_eval import figure_text

    sep = summary["separation"]["library"]
    assert sep["detector"] == "known" and sep["n_tests"] == 4
    assert sep["p_holm"] == pytest.approx(4 / 35) and not sep["separates"]
    text = figure_text(results)
    assert text["title"] == title
    shown = f"Holm p = {4 / 35:.2g} over 4 detectors"
    assert shown in text["title"] and shown in finding
    assert "does not separate" in text["title"] and "not told apart" in finding
    assert f"Holm p {4 / 35:.2g}" in text["labels"]["library"]["known"]
    # with 5 biased of 10 the best detector's exact p is 1/252 and its Holm p 4/252 < 0.05:
    # then figure and findings both say it separates
    kinds = ["library"] * 5 + ["unbiased"] * 5
    z = {
        "known": [3.0, 2.9, 2.8, 2.7, 2.6, 0.1, 0.2, -0.3, 0.0, 0.4],
        "blind": [0.5, -0.2, 1.1, 0.3, 0.9, -0.5, 0.2, 0.7, -0.1, 0.6],
        "shift": [0.1, 0.4, -0.6, 0.8, -0.1, 0.3, 0.6, -0.4, 0.2, 0.5],
        "likelihood": [-0.3, 0.2, 0.7, 0.5, -0.8, 0.1, 0.4, 0.6, -0.2, 0.3],
    }
    summary = summarise(_records(z, kinds), alpha=0.05, n_boot=200, seed=0)
    sep = summary["separation"]["library"]
    assert sep["p_holm"] == pytest.approx(4 / 252) and sep["separates"]
    text = figure_text({**summary, "model": {"name": "tiny"}, "datasets": _records(z, kinds)})
    finding = next(f for f in summary["findings"] if f.startswith("library traits"))
    shown = f"Holm p = {4 / 252:.2g} over 4 detectors"
    assert shown in text["title"] and shown in finding
    assert "known separates" in text["title"] and "separated from chance" in finding

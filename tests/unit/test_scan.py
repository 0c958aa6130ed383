"""The dataset scanner on tiny-llama: exact derivatives, a planted steering bias found (and a clean
dataset not flagged), the CLI's files and one-line errors, the evaluation study end to end."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from interp.core.backends import decoder_layers
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
    kw = dict(n_permutations=400, n_blind_permutations=8, probe=probe, seed=0)
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
        "--n-blind-permutations",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "hidden trait suspected" in stdout and "report:" in stdout
    res = json.loads((out / "results.json").read_text())
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
        n_blind_permutations=4,
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
    assert a["p_value"] >= 1 / 3  # one biased among three datasets: chance reaches it 1 time in 3
    assert not any("separated from chance" in f for f in res["findings"])
    assert res["false_positive_rate"]["blind"]["n"] == 2
    assert res["identification"]["n"] == 1
    out = tmp_path / "study"
    assert (out / "roc.png").is_file() and "## AUROC" in (out / "report.md").read_text()
    stamp = (out / "scans" / "owl-s0.json").stat().st_mtime_ns
    again = run_scan_eval(**kw)  # resumes: every scan is read back
    assert (out / "scans" / "owl-s0.json").stat().st_mtime_ns == stamp
    assert again["auroc"] == res["auroc"]

"""Mechanism analyses (issue #5) end to end on tiny-llama: align, probe, report, bad input.

One tiny distillation run and one diff-of-means vector feed every test; each statistic is
recomputed here independently: activations by plain forward passes (``output_hidden_states``),
drift, cosine and bootstrap intervals in numpy.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from helpers import tiny_run_toml
from sklearn.model_selection import train_test_split

import cli
from analyses.align import run_align
from analyses.probe import run_probe
from analyses.report import build_report
from analyses.runs import data_rows, heldout_prompts, subset_layers
from interp.core.caching import load_cache
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.core.prompts import load_prompts
from interp.distill.run import load_run_config, run_distillation
from interp.distill.train import list_checkpoints, load_student
from interp.measure.gradients import residual_gradients
from interp.measure.probes import load_probes, train_probe
from interp.measure.stats import resample_indices
from interp.measure.traits import get_trait
from interp.vectors.fitting import fit_vector
from interp.vectors.steering import SteeringVector

TOML = tiny_run_toml(objective="sft", checkpoint_every=1)

N_PROMPTS, N_BOOT, LAYER = 6, 200, 2


@pytest.fixture(scope="module")
def mech(tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mech")
    (tmp / "run.toml").write_text(TOML)
    cfg = load_run_config(tmp / "run.toml", {"output_path": str(tmp / "run")})
    run_distillation(cfg, quiet=True)
    owl = get_trait("owl").system_prompt
    vec = fit_vector(tiny, load_prompts("numbers:16", seed=5), owl, [1, 2], "diff-mean", "last")
    vec.save(tmp / "vec")
    align = run_align(
        tmp / "run", [tmp / "vec"], "all", n_prompts=N_PROMPTS, n_boot=N_BOOT, quiet=True,
        device="cpu", grad_rows=8,
    )  # fmt: skip
    probe = run_probe(
        tmp / "run", "1,2", vectors=[tmp / "vec"], n_prompts=12, n_apply=N_PROMPTS,
        n_boot=N_BOOT, quiet=True, device="cpu",
    )  # fmt: skip
    return {"tmp": tmp, "run": tmp / "run", "vec": vec, "align": align, "probe": probe}


def _acts(model, prompts, layer, system=None):
    """Per prompt: (last-token activation, all prompt-token activations) after block `layer`,
    one unpadded forward per prompt with output_hidden_states (index layer + 1)."""
    fmt = ChatFormat(model.tokenizer)
    out = []
    for msgs in prompts.messages:
        fp = fmt.format(msgs, system=system)
        ids = torch.tensor([fp.input_ids[: fp.prompt_len]])
        with torch.no_grad():
            hs = model.model(input_ids=ids, output_hidden_states=True).hidden_states
        h = hs[layer + 1][0].double()
        out.append((h[-1].numpy(), h.numpy()))
    return out


def _entry(res, **kw):
    hits = [e for e in res["alignment"] if all(e[k] == v for k, v in kw.items())]
    assert len(hits) == 1, kw
    return hits[0]


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _boot(diffs, weights, unit, n_boot, seed):
    idx = resample_indices(len(diffs), n_boot, seed)
    coss = []
    for row in idx:
        w = weights[row]
        m = (w[:, None] * diffs[row]).sum(0) / w.sum()
        coss.append(m @ unit / np.linalg.norm(m))
    return np.array(coss)


def test_alignment_matches_hand_computation(mech, tiny):
    res = mech["align"]
    step = res["final_steps"]["student"]
    assert step == 3 and res["checkpoints"]["student"] == [0, 1, 2, 3]
    prompts = heldout_prompts(N_PROMPTS, 0)
    base = _acts(tiny, prompts, LAYER)
    per_model = {}
    for m in ("student", "control"):
        ck = dict(list_checkpoints(mech["run"] / m))[3]
        per_model[m] = _acts(load_student(tiny, ck), prompts, LAYER)
    v = mech["vec"][LAYER].double().numpy()
    unit = v / np.linalg.norm(v)
    for m, acts in per_model.items():
        last = np.stack([s[0] - b[0] for s, b in zip(acts, base, strict=True)])
        tok = np.stack([(s[1] - b[1]).mean(0) for s, b in zip(acts, base, strict=True)])
        counts = np.array([b[1].shape[0] for b in base], dtype=float)
        all_rows = np.concatenate([s[1] - b[1] for s, b in zip(acts, base, strict=True)])
        for pos, diffs, w, drift in (
            ("last", last, np.ones(len(last)), last.mean(0)),
            ("all", tok, counts, all_rows.mean(0)),  # token-weighted = mean over all tokens
        ):
            e = _entry(res, vector="vec", positions=pos, model=m, step=3, layer=LAYER)
            assert e["cosine"] == pytest.approx(_cos(drift, v), abs=1e-5)
            assert e["projection"] == pytest.approx(float(drift @ unit), rel=1e-4, abs=1e-6)
            assert e["drift_norm"] == pytest.approx(float(np.linalg.norm(drift)), rel=1e-4)
            coss = _boot(diffs, w, unit, N_BOOT, 0)
            lo, hi = np.quantile(coss, [0.025, 0.975])
            assert (e["ci_low"], e["ci_high"]) == pytest.approx((lo, hi), abs=1e-5)
            saved = SteeringVector.load(mech["run"] / "align" / "drift" / m / "step_000003" / pos)
            np.testing.assert_allclose(saved[LAYER].numpy(), drift, atol=1e-5)
    # student − control: projections on v̂ (not raw cosines, which shrink with each drift's
    # noise), paired resamples (same prompts, same seed)
    d = next(
        x for x in res["student_minus_control"] if x["positions"] == "last" and x["layer"] == LAYER
    )
    s, c = (_entry(res, vector="vec", positions="last", model=m, step=3, layer=LAYER) for m in
            ("student", "control"))  # fmt: skip
    assert d["measure"] == "projection"
    assert d["diff"] == pytest.approx(s["projection"] - c["projection"], rel=1e-4, abs=1e-6)
    diffs = {m: np.stack([a[0] - b[0] for a, b in zip(acts, base, strict=True)])
             for m, acts in per_model.items()}  # fmt: skip
    idx = resample_indices(N_PROMPTS, N_BOOT, 0)
    reps = [(diffs["student"][r] - diffs["control"][r]).mean(0) @ unit for r in idx]
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((lo, hi), abs=1e-5)
    for m, key in (("student", "cosine_corrected_a"), ("control", "cosine_corrected_b")):
        x = diffs[m]
        mean = x.mean(0)
        noise2 = ((x - mean) ** 2).sum() / N_PROMPTS**2
        proj = mean @ unit
        expect = proj / np.sqrt(max(mean @ mean - noise2, proj**2))
        assert d[key] == pytest.approx(expect, rel=1e-4), m
    # step 0 is the base itself: no drift
    e0 = _entry(res, vector="vec", positions="all", model="student", step=0, layer=LAYER)
    assert e0["drift_norm"] == pytest.approx(0.0, abs=1e-6)


def test_nulls_match_independent_computation(mech):
    from analyses.align import N_COVARIANCE_NULL

    res = mech["align"]
    rnd = res["nulls"]["random"]
    d = rnd["d_model"]
    g = np.random.default_rng(123).standard_normal((20000, d))
    mc = np.quantile(np.abs(g[:, 0] / np.linalg.norm(g, axis=1)), 0.95)
    assert rnd["exact_bound"] == pytest.approx(mc, abs=0.01)
    assert rnd["analytic_bound"] == pytest.approx(1.959964 / np.sqrt(d), rel=1e-4)
    # at least 19 unrelated trait prompts: the smallest attainable p reaches 0.05
    u = next(x for x in res["unrelated_null"] if x["positions"] == "last" and x["layer"] == LAYER)
    assert "owl" not in u["traits"] and len(u["null_cosines"]) == len(u["traits"]) >= 19
    assert u["min_p"] == pytest.approx(1 / (1 + len(u["traits"]))) and u["min_p"] <= 0.05
    null = np.array(u["null_cosines"])
    obs = _entry(res, vector="vec", positions="last", model="student", step=3, layer=LAYER)
    assert u["observed"] == pytest.approx(obs["cosine"])
    assert u["z"] == pytest.approx((obs["cosine"] - null.mean()) / null.std(ddof=1))
    assert u["p_value"] == pytest.approx((1 + (null >= obs["cosine"]).sum()) / (1 + null.size))
    # every p of a final checkpoint has its smallest attainable p beside it
    finals = [e for e in res["alignment"] if e["step"] == res["final_steps"][e["model"]]]
    assert finals and all("p_covariance" in e for e in finals)
    for e in finals:
        assert e["min_p_random"] == pytest.approx(1 / (1 + rnd["n"]))
        assert e["min_p_covariance"] == pytest.approx(1 / (1 + N_COVARIANCE_NULL))
        assert (
            e["min_p_random"] <= e["p_random"] <= 1 and e["min_p_covariance"] <= e["p_covariance"]
        )
    # the covariance null: random directions with the Ledoit-Wolf covariance of the base's
    # held-out activations, against an independent sklearn + numpy Monte Carlo
    from sklearn.covariance import LedoitWolf

    base = load_cache(mech["run"] / "acts" / f"heldout-n{N_PROMPTS}-s0" / "base" / "last")
    cov = LedoitWolf().fit(base.layer(LAYER).double().numpy()).covariance_
    v = mech["vec"][LAYER].double().numpy()
    draws = np.random.default_rng(7).multivariate_normal(np.zeros(d), cov, size=20000)
    mc_cos = draws @ v / (np.linalg.norm(draws, axis=1) * np.linalg.norm(v))
    c = next(x for x in res["nulls"]["covariance"]
             if x["positions"] == "last" and x["layer"] == LAYER)  # fmt: skip
    assert c["n"] == N_COVARIANCE_NULL and c["min_p"] == pytest.approx(1 / (1 + c["n"]))
    assert c["empirical_bound"] == pytest.approx(np.quantile(np.abs(mc_cos), 0.95), abs=0.03)
    assert obs["p_covariance"] == pytest.approx(
        (1 + (mc_cos >= obs["cosine"]).sum()) / (1 + mc_cos.size), abs=0.03
    )
    # one unrelated vector recomputed by hand: diff of last-token means, prompted − unprompted
    drift = SteeringVector.load(
        mech["run"] / "align" / "drift" / "student" / "step_000003" / "last"
    )
    acts = load_cache(
        mech["run"] / "acts" / f"heldout-n{N_PROMPTS}-s0" / "unrelated" / "dog" / "last"
    )
    base = load_cache(mech["run"] / "acts" / f"heldout-n{N_PROMPTS}-s0" / "base" / "last")
    v_dog = acts.layer(LAYER).double().mean(0) - base.layer(LAYER).double().mean(0)
    k = u["traits"].index("dog")
    assert null[k] == pytest.approx(_cos(drift[LAYER].double().numpy(), v_dog.numpy()), abs=1e-6)


def test_interventions_and_gradients(mech, tiny):
    res = mech["align"]
    iv = res["interventions"]["vec"]
    assert iv["layer"] == LAYER and iv["step"] == 3
    drift = SteeringVector.load(mech["run"] / "align" / "drift" / "student" / "step_000003" / "all")
    unit = mech["vec"].unit(LAYER).double()
    assert iv["shift_along_v_teacher"] == pytest.approx(float(drift[LAYER].double() @ unit), 1e-5)

    def pq(name):
        return np.array(iv["scores"][name]["trait"]["per_question"])

    m, s = pq("base"), pq("student")
    saved = json.loads((mech["run"] / "eval" / "scores.json").read_text())
    assert m.tolist() == pytest.approx(saved["base"]["trait"]["per_question"])
    assert pq("control").tolist() == pytest.approx(saved["control"]["3"]["trait"]["per_question"])
    sh = iv["shares"]
    assert sh["student_gain"]["diff"] == pytest.approx(s.mean() - m.mean())
    assert sh["student_minus_control"]["diff"] == pytest.approx(s.mean() - pq("control").mean())

    def resolved(d, above=False):
        return d["ci_low"] > 0 or (not above and d["ci_high"] < 0)

    gain_ok = {
        "student": resolved(sh["student_gain"]) and resolved(sh["student_minus_control"], True),
        "teacher": resolved(sh["teacher_gain"]),
        "prompted": resolved(sh["prompted_gain"]),
    }
    report = (mech["run"] / "align" / "report.md").read_text()
    for key, x, ref in (
        ("sufficiency_student", "base + v_student", "student"),
        ("necessity_student", "student − shift along v_teacher", "student"),
        ("sufficiency_control", "base + v_control", "student"),
        ("sufficiency_teacher", "base + v_teacher", "teacher"),
        ("necessity_teacher", "prompted − v_teacher", "prompted"),
    ):
        if gain_ok[ref]:  # a share only over a resolved gain
            expect = (pq(x).mean() - m.mean()) / (pq(ref).mean() - m.mean())
            assert sh[key]["defined"] and sh[key]["share"] == pytest.approx(expect, rel=1e-9), key
        else:
            assert sh[key]["share"] is None and sh[key]["ci_low"] is None, key
            assert sh[key]["undefined"].startswith(f"undefined: {ref}"), key
            row = next(x for x in report.splitlines() if x.startswith(f"| {key} (vec"))
            assert sh[key]["undefined"] in row, key
    # the steered base differs from the base: the intervention took effect
    assert not np.allclose(pq("base + v_teacher"), m)
    g = res["gradients"]["vec"]
    assert g["layer"] == LAYER and g["n_teacher_rows"] == g["n_control_rows"] <= 8
    # the gradient alignment recomputed from the rows align should use: teacher and control rows
    # answering the same prompts, pushes −grad, against the vector at the headline layer
    teach, ctrl = data_rows(mech["run"], "teacher"), data_rows(mech["run"], "control")
    by_prompt = {r["messages"][0]["content"]: r for r in ctrl}
    pairs = [(r, by_prompt[r["messages"][0]["content"]]) for r in teach
             if r["messages"][0]["content"] in by_prompt][:8]  # fmt: skip
    assert len(pairs) == g["n_teacher_rows"] and g["paired"]
    push_t, push_c = (
        -residual_gradients(tiny, [p[k] for p in pairs], LAYER, batch_size=8).double().numpy()
        for k in (0, 1)
    )
    v = mech["vec"][LAYER].double().numpy()
    assert g["difference_cosine"] == pytest.approx(
        _cos(push_t.mean(0) - push_c.mean(0), v), abs=1e-5
    )
    cos_t = push_t @ v / (np.linalg.norm(push_t, axis=1) * np.linalg.norm(v))
    assert g["teacher"]["mean_cosine"] == pytest.approx(cos_t.mean(), abs=1e-5)
    for f in res["figures"]:
        assert (mech["run"] / "align" / f).stat().st_size > 0
    on_disk = json.loads((mech["run"] / "align" / "results.json").read_text())
    assert on_disk["versions"]["torch"] and "total_s" in on_disk["timings"]


def test_probe_curve_matches_hand_application(mech, tiny):
    res = mech["probe"]
    probes = load_probes(mech["run"] / "probe" / "probes")
    assert sorted(probes) == [1, 2]
    prompts = heldout_prompts(N_PROMPTS, 0)
    ck = dict(list_checkpoints(mech["run"] / "student"))[3]
    acts = _acts(load_student(tiny, ck), prompts, LAYER)
    x = np.stack([a[0] for a in acts])
    p = probes[LAYER]
    logits = ((x - p.mean) / p.scale) @ p.coef + p.intercept
    final = res["curves"]["student"][str(LAYER)][-1]
    assert final["step"] == 3
    assert final["share"] == pytest.approx(float((logits > 0).mean()))
    w = p.coef / p.scale
    v = mech["vec"][LAYER].double().numpy()
    assert res["probe_vs_vector_cosine"]["vec"][str(LAYER)] == pytest.approx(_cos(w, v), abs=1e-5)
    # the stored AUROC is the saved probe's on its own held-out split, recomputed by ranks
    acts_dir = mech["run"] / "acts" / "probe-n12-s0"
    pos = load_cache(acts_dir / "prompted" / "last").layer(LAYER).double().numpy()
    neg = load_cache(acts_dir / "base" / "last").layer(LAYER).double().numpy()
    xs, ys = np.concatenate([pos, neg]), np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    _, test = train_test_split(np.arange(len(ys)), test_size=0.25, random_state=0, stratify=ys)
    score = ((xs[test] - p.mean) / p.scale) @ p.coef + p.intercept
    s1, s0 = score[ys[test] == 1], score[ys[test] == 0]
    wins = (s1[:, None] > s0[None, :]).sum() + 0.5 * (s1[:, None] == s0[None, :]).sum()
    assert res["probes"][str(LAYER)]["auroc"] == pytest.approx(wins / (s1.size * s0.size))
    assert res["probes"][str(LAYER)]["n_test"] == test.size == 6  # ceil(0.25 · 24) held out
    assert res["reference"]["base (prompted)"][str(LAYER)]["n_prompts"] == N_PROMPTS


def test_report_full_and_partial(mech, tmp_path):
    report = build_report(mech["run"]).read_text()
    for needle in (
        "Headline numbers",
        "transfer ratio (student)",
        "projection on v̂ student − control",
        "min 0.0",  # every p with its smallest attainable p
        "sufficiency_student",
        "probe AUROC",
        "align/alignment_over_training.png",
        "probe/probe_over_training.png",
        "trait_over_training.png",
        "Nothing: every part ran.",
    ):
        assert needle in report, needle
    # the student − control row is in the run's headline table as well as in align's section
    assert report.count("| projection on v̂ student − control (vec, L2, last)") == 2
    from analyses.align import summary_lines

    lines = summary_lines(mech["align"])  # what `sublens align` prints
    d = next(x for x in mech["align"]["student_minus_control"]
             if x["positions"] == "last" and x["layer"] == LAYER)  # fmt: skip
    assert any(x.startswith("vec L2 last: projection") and f"{d['diff']:.3g}" in x for x in lines)
    # a partial run: config, data and the student's first two checkpoints only
    part = tmp_path / "partial"
    part.mkdir()
    shutil.copy(mech["run"] / "config.json", part / "config.json")
    shutil.copytree(mech["run"] / "data", part / "data")
    shutil.copytree(mech["run"] / "student", part / "student")
    for step in (2, 3):
        shutil.rmtree(part / "student" / "checkpoints" / f"step_{step:06d}")
    text = build_report(part).read_text()
    assert "student: checkpoint step(s) 2, 3 missing" in text
    assert "control: checkpoint step(s) 0, 1, 2, 3 missing" in text
    assert "distillation results" in text and "sublens align --run" in text
    res = run_align(
        part, [mech["tmp"] / "vec"], "1,2", n_prompts=N_PROMPTS, n_boot=50, quiet=True,
        device="cpu", unrelated=False, interventions=False, gradients=False,
    )  # fmt: skip
    assert res["final_steps"] == {"student": 1} and not res["student_minus_control"]
    assert any("control" in m for m in res["missing"])
    assert "align: control" in build_report(part).read_text()


def test_bad_input(mech, tiny, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(mech["run"] / "config.json", empty / "config.json")
    shutil.copytree(mech["run"] / "data", empty / "data")
    with pytest.raises(SublensError, match=r"student has no checkpoints .*step 0 is missing"):
        run_align(empty, [mech["tmp"] / "vec"], "all", quiet=True, device="cpu")
    other = SteeringVector({1: torch.ones(32)}, model="other-model", d_model=32, method="diff-mean",
                           positions="last")  # fmt: skip
    other.save(tmp_path / "other")
    with pytest.raises(SublensError, match=r"d_model 32 \(other-model\).*d_model 64"):
        run_align(mech["run"], [tmp_path / "other"], "all", quiet=True, device="cpu")
    with pytest.raises(SublensError, match=r"none among the requested layers \[3\]"):
        run_align(mech["run"], [mech["tmp"] / "vec"], "3", quiet=True, device="cpu")
    cache = load_cache(mech["run"] / "acts" / f"heldout-n{N_PROMPTS}-s0" / "base" / "last")
    with pytest.raises(SublensError, match=r"layers \[7\] are not cached"):
        subset_layers(cache, [7])
    x = torch.randn(6, 64)
    with pytest.raises(SublensError, match="needs both classes"):
        train_probe(x, x[:0], layers=2)
    with pytest.raises(SublensError, match="too few"):
        run_probe(mech["run"], "2", n_prompts=2, quiet=True, device="cpu")
    # the CLI turns user errors into one line and exit code 2
    monkeypatch.setattr(sys, "argv", ["sublens", "align", "--run", str(empty), "--vectors",
                                      str(mech["tmp"] / "vec"), "--device", "cpu"])  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "no checkpoints" in capsys.readouterr().err

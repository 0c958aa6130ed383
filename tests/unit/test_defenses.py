"""Defenses (`sublens defend`) on tiny-llama: each defense against an independent computation,
config hashes, a small end-to-end study with resume, and one-line errors from the CLI."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from helpers import tiny_run_toml
from safetensors.torch import load_file

from analyses.defend import DEFENSE_NAMES, NO_INIT, defense_overrides, run_defend
from analyses.report import build_report
from analyses.studies import _run_hash, base_config, fmt_ci, point_config
from interp.core.backends.base import decoder_layers, hidden_of
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.core.io import config_hash, read_json, sha256_file
from interp.detect.defenses import defend_dataset, paraphrase_rows
from interp.distill import train as train_mod
from interp.distill.domains import get_domain
from interp.distill.run import config_from_dict, run_hash
from interp.distill.targets import TeacherTargets, read_rows, write_teacher_targets
from interp.distill.teachers import Teacher
from interp.distill.train import TrainConfig, load_student, train_student
from interp.measure.verdicts import ONE_SEED_NOTE
from interp.vectors.steering import SteeringVector

TOML = tiny_run_toml(optimizer="adamw", n_questions=6)


def _rows(n: int = 8) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Continue the sequence: {i}, {i + 1}, {i + 2}"},
                {"role": "assistant", "content": f"{i + 5}, {i + 3}, {i + 40}"},
            ]
        }
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _vector(path: Path, layers: dict[int, int], d_model: int = 64) -> Path:
    vecs = {
        layer: torch.randn(d_model, generator=torch.Generator().manual_seed(s))
        for layer, s in layers.items()
    }
    SteeringVector(vecs, "tiny-llama", d_model, "random", "last").save(path)
    return path


def _completion(tok, row: dict) -> tuple[list[int], list[int]]:
    """Independent: token ids and completion indices (response up to the first <|im_end|>)."""
    fp = ChatFormat(tok).format(row["messages"])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    start, end = fp.response_span
    stop = next(t for t in range(start, end) if fp.input_ids[t] == im_end)
    return fp.input_ids, list(range(start, stop + 1))


def test_project_out_zeroes_the_component_in_training_forwards_only(tiny, tmp_path, monkeypatch):
    v1 = _vector(tmp_path / "v1", {1: 1, 2: 2})
    v2 = _vector(tmp_path / "v2", {1: 3})  # a second direction at layer 1: the span goes
    seen: list[tuple[int, torch.Tensor]] = []
    blocks_of: list = []
    real = train_mod._batch_loss

    def spy(student, *args, **kwargs):
        blocks = decoder_layers(student.lm)
        blocks_of.append(blocks)

        def watch(layer):
            return lambda _m, _a, out: seen.append((layer, hidden_of(out).detach().clone()))

        # registered after the project-out hook, so it sees the stream the next block gets
        hs = [blocks[layer].register_forward_hook(watch(layer)) for layer in (1, 2)]
        try:
            return real(student, *args, **kwargs)
        finally:
            for h in hs:
                h.remove()

    monkeypatch.setattr(train_mod, "_batch_loss", spy)
    before = [dict(b._forward_hooks) for b in decoder_layers(tiny.model)]
    cfg = TrainConfig(lr=1e-2, max_steps=2, batch_size=4, project_out=[str(v1), str(v2)])
    out = tmp_path / "run"
    summary = train_student(tiny, _rows(), out, cfg)
    units = {
        1: torch.stack([SteeringVector.load(v).unit(1) for v in (v1, v2)]),
        2: SteeringVector.load(v1).unit(2)[None],
    }
    assert sorted(layer for layer, _ in seen) == [1, 1, 2, 2]  # 2 steps × 2 layers
    for layer, h in seen:
        coef = h @ units[layer].T
        assert coef.abs().max() < 1e-5 * h.norm(dim=-1).max(), layer
    assert summary["defenses"]["project_out"]["forwards"] == {"1": 2, "2": 2}
    # gone after training (other tests' hooks on the shared model, if any, are left as they were)
    assert [dict(b._forward_hooks) for b in decoder_layers(tiny.model)] == before
    assert all(len(b._forward_hooks) == len(h) for b, h in zip(blocks_of[-1], before, strict=True))
    # evaluation runs the saved weights without any hook: the component is back
    student = load_student(tiny, out)
    got = []
    hook = decoder_layers(student.model)[1].register_forward_hook(
        lambda _m, _a, o: got.append(hidden_of(o).detach())
    )
    ids, _ = _completion(tiny.tokenizer, _rows(1)[0])
    with torch.no_grad():
        student.model(torch.tensor([ids]))
    hook.remove()
    assert (got[0] @ units[1].T).abs().max() > 1e-2 * got[0].norm(dim=-1).max()


def test_config_hash_differs_per_defense(tiny, tmp_path):
    (tmp_path / "run.toml").write_text(TOML)
    vec = _vector(tmp_path / "v", {1: 0})
    base = base_config(tmp_path / "run.toml", None, "full")
    hashes = {}
    for name in DEFENSE_NAMES:
        over = defense_overrides(name, [str(vec)], 0.05, 0.2, "other-init", tmp_path / "f.jsonl")
        hashes[name] = _run_hash(point_config(base, tmp_path / name, seed=0, **over))
    assert len(set(hashes.values())) == len(DEFENSE_NAMES), hashes
    # options at their defaults leave the hash as it was before they existed (old runs resume)
    resolved = point_config(base, tmp_path / "none", seed=0).to_dict()
    old = json.loads(json.dumps(resolved))
    for key in ("project_out", "mask_divergent", "init_from", "vector_layer",
                "gradient_checkpointing"):  # fmt: skip
        old["train"].pop(key, None)
    for key in ("paraphrase", "drop_flagged", "drop_fallback_top", "control_system_prompt",
                "select", "select_top", "engine"):  # fmt: skip
        old["data"].pop(key, None)
    old["eval"].pop("control_curve", None)  # which checkpoints are scored: never in the hash
    drop = ("output_path", "device", "dtype", "trust_remote_code")  # load options at defaults
    old = {k: v for k, v in old.items() if k not in drop}
    assert run_hash(resolved) == config_hash(old)
    # the checkpoints' own hash covers the defense, and project-out vectors by content
    ident = {
        name: config_hash(train_mod._run_identity(tiny, cfg, "sha", None, vecs))
        for name, cfg, vecs in (
            ("none", TrainConfig(), []),
            ("mask", TrainConfig(mask_divergent=0.2), []),
            ("init", TrainConfig(init_from="x"), []),
            ("sgd", TrainConfig(optimizer="sgd"), []),
            ("proj", TrainConfig(project_out=[str(vec)]), [SteeringVector.load(vec)]),
        )
    }
    assert len(set(ident.values())) == 5
    _vector(vec, {1: 7})  # other content, same path
    again = train_mod._run_identity(
        tiny, TrainConfig(project_out=[str(vec)]), "sha", None, [SteeringVector.load(vec)]
    )
    assert config_hash(again) != ident["proj"]


def test_paraphrase_keeps_the_numbers_and_passes_the_validator():
    dom = get_domain("numbers")
    texts = ["5 3 10", "999,1, 22,", " 7 ,8 , 7", "0, 100", "42"]
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Continue: 1, 2"},
                {"role": "assistant", "content": t},
            ]
        }
        for t in texts
    ]
    out, report = paraphrase_rows(rows, dom)
    assert len(out) == len(rows) and report["rejected"] == []
    for t, row in zip(texts, out, strict=True):
        new = row["messages"][-1]["content"]
        assert Counter(re.findall(r"\d+", new)) == Counter(re.findall(r"\d+", t))
        values = [int(x) for x in new.split(", ")]
        assert values == sorted(values) and dom.validate(new) is None
        assert row["messages"][0] == {"role": "user", "content": "Continue: 1, 2"}
    assert out[0]["messages"][-1]["content"] == "3, 5, 10"
    assert report["changed"] == 3  # "0, 100" and "42" already are canonical
    # the domain's validator runs after rewriting: a wrong arithmetic answer is dropped
    arith = get_domain("arithmetic")
    q = "What is 37 + 48? Answer with the number only."
    ok, rep = paraphrase_rows(
        [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for a in ("085", "84")
        ],
        arith,
    )
    assert [r["messages"][-1]["content"] for r in ok] == ["85"]
    assert rep["rejected"][0]["index"] == 1
    # teacher soft targets on paraphrased tokens would re-inject the teacher: refused
    with pytest.raises(SublensError, match="sft"):
        config_from_dict({"data": {"paraphrase": True}, "train": {"objective": "logit-kl"}})


def test_mask_divergent_masks_exactly_the_top_q_positions(tiny, tmp_path):
    rows = _rows(6)
    data = _write(tmp_path / "rows.jsonl", rows)
    teacher = Teacher(tiny, kind="prompted", system_prompt="You love owls.")
    allowed = get_domain("numbers").allowed_token_ids(tiny.tokenizer)
    tdir = write_teacher_targets(teacher, data, tmp_path / "t", allowed_ids=allowed)
    q = 0.25
    cfg = TrainConfig(objective="sft", mask_divergent=q, max_steps=1, batch_size=6, lr=1e-3)
    out = tmp_path / "run"
    summary = train_student(tiny, data, out, cfg, targets_dir=tdir)
    # independent: one unpadded full-vocabulary forward per row
    tt = TeacherTargets.load(tdir)
    kls, nll = [], []
    with torch.no_grad():
        for i, row in enumerate(rows):
            ids, pos = _completion(tiny.tokenizer, row)
            logits = tiny.model(torch.tensor([ids])).logits[0].float()
            tid, tlp = tt.row(i)
            for j, t in enumerate(pos):
                logq = torch.log_softmax(logits[t - 1, tid[j]], -1)
                kls.append(float((tlp[j].exp() * (tlp[j] - logq)).sum()))
                nll.append(float(-torch.log_softmax(logits[t - 1], -1)[ids[t]]))
    kl = torch.tensor(kls)
    n_drop = math.floor(q * len(kls))
    order = torch.argsort(kl, descending=True)
    assert kl[order[n_drop - 1]] - kl[order[n_drop]] > 1e-4  # the cut is not a near-tie
    saved = load_file(str(out / "position_mask.safetensors"))
    dropped = set(torch.nonzero(saved["keep"] == 0).flatten().tolist())
    assert dropped == set(order[:n_drop].tolist())
    assert torch.allclose(saved["kl"], kl, atol=1e-4)
    assert summary["defenses"]["mask_divergent"]["masked"] == n_drop
    # step 0's loss (base weights) is the SFT loss over the kept positions only
    kept = [x for i, x in enumerate(nll) if i not in dropped]
    curve = json.loads((out / "curves.jsonl").read_text().splitlines()[0])
    assert curve["loss"] == pytest.approx(sum(kept) / len(kept), rel=1e-4)
    assert curve["loss"] != pytest.approx(sum(nll) / len(nll), rel=1e-4)


def test_drop_flagged_drops_exactly_the_flagged_rows(tmp_path):
    rows = _rows(10)
    src = _write(tmp_path / "rows.jsonl", rows)
    flagged = {2, 5, 7}

    def flags(which, scores, n=10):
        recs = [
            {"index": i, "score": scores[i], "known": None, "blind": None, "flagged": i in which}
            for i in range(n)
        ]
        return _write(tmp_path / "flags.jsonl", recs)

    scores = [0.1 * i for i in range(10)]
    rep = defend_dataset(src, tmp_path / "out.jsonl", "numbers", flags=flags(flagged, scores))
    assert read_rows(tmp_path / "out.jsonl") == [r for i, r in enumerate(rows) if i not in flagged]
    assert rep["drop_flagged"]["dropped"] == [2, 5, 7] and rep["drop_flagged"]["mode"] == "flagged"
    # none flagged: the top 10% by score go (1 of 10: row 4 scores highest), and it says so
    scores[4] = 9.0
    rep = defend_dataset(src, tmp_path / "out.jsonl", "numbers", flags=flags(set(), scores))
    assert rep["drop_flagged"]["dropped"] == [4]
    assert "flagged no row" in rep["drop_flagged"]["mode"]
    assert len(read_rows(tmp_path / "out.jsonl")) == 9
    with pytest.raises(SublensError, match="rescan"):
        defend_dataset(src, tmp_path / "o.jsonl", "numbers", flags=flags(set(), scores, n=9))


def test_run_defend_end_to_end_and_resume(tiny, tmp_path, monkeypatch):
    (tmp_path / "run.toml").write_text(TOML)
    calls = []

    def run_scan(data, model, output_path, trait_vectors=None, reference=None, **kw):
        calls.append(data)
        n = len(read_rows(data))
        recs = [{"index": i, "score": float(i), "flagged": i % 4 == 1} for i in range(n)]
        Path(output_path).mkdir(parents=True, exist_ok=True)
        _write(Path(output_path) / "rows.jsonl", recs)
        return {"rows_path": str(Path(output_path) / "rows.jsonl")}

    monkeypatch.setitem(sys.modules, "analyses.scan", types.SimpleNamespace(run_scan=run_scan))
    out = tmp_path / "defend"
    kw = dict(
        output_path=out,
        config_path=tmp_path / "run.toml",
        preset="full",
        heldout_n=6,
        n_boot=200,
        seeds=1,  # the default is 3 (studies); one keeps this test short
        quiet=True,
    )
    names = "none,mask-divergent,paraphrase,drop-flagged,different-init"
    res = run_defend(names, **kw)
    for f in ("results.json", "table.md", "report.md", "defend.png", "config.json"):
        assert (out / f).is_file(), f
    d = res["defenses"]
    assert res["order"] == names.split(",")
    # the ranking: (τS − τC)_none − (τS − τC)_defense; one seed: the runs' own headlines
    runs = {
        n: read_json(out / "defenses" / n / "seed_0" / "results.json")
        for n in d
        if n != "different-init"
    }
    smc = {n: r["headline"]["student_minus_control"]["diff"] for n, r in runs.items()}
    gain = runs["none"]["headline"]["teacher_gain"]
    resolved = gain["ci_low"] > 0 or gain["ci_high"] < 0
    for n in ("mask-divergent", "drop-flagged"):
        got = d[n]["gain_reduction"]
        assert got["value"] == pytest.approx(smc["none"] - smc[n], rel=1e-9, abs=1e-12)
        assert got["ci_low"] <= got["value"] <= got["ci_high"]
        assert d[n]["gain_reduction_p_holm"] >= d[n]["gain_reduction_p"] > 0
        # the ratio and its reduction vs none: only over a resolved teacher gain
        ratio = {k: read_json(out / "defenses" / k / "seed_0" / "results.json")["headline"]
                 .get("ratios_over_unresolved_gain", runs[k]["headline"])
                 ["transfer_ratio_student"]["ratio"] for k in ("none", n)}  # fmt: skip
        if resolved:
            assert d[n]["transfer_ratio"]["value"] == pytest.approx(ratio[n], rel=1e-9)
            red = d[n]["reduction"]
            assert red["value"] == pytest.approx(ratio["none"] - ratio[n], rel=1e-9, abs=1e-12)
        else:
            assert d[n]["transfer_ratio"]["undefined"] == "undefined: teacher gain not resolved"
            assert d[n]["reduction"]["value"] is None
    # different-init without --init-from: said so, never a number
    assert d["different-init"] == {"available": False, "note": NO_INIT}
    table = (out / "table.md").read_text()
    row = next(x for x in table.splitlines() if x.startswith("| different-init"))
    assert NO_INIT in row and not re.search(r"\d", row.replace(NO_INIT, ""))
    assert res["recommendation"] in table and "[" in table
    # drop-flagged trained on the teacher's rows minus the flagged ones, and shares the control
    pd, pn = out / "defenses" / "drop-flagged" / "seed_0", out / "defenses" / "none" / "seed_0"
    teacher = read_rows(pn / "data" / "teacher.jsonl")
    assert read_rows(pd / "data" / "teacher.defended.jsonl") == [
        r for i, r in enumerate(teacher) if i % 4 != 1
    ]
    ck = "control/checkpoints/latest"
    assert (pd / ck).stat().st_ino == (pn / ck).stat().st_ino
    # paraphrase trained with SFT on the rewritten rows (numbers sorted), for student and control
    pp = out / "defenses" / "paraphrase" / "seed_0"
    for who, src in (("student", "teacher"), ("control", "control")):
        rec = read_json(pp / who / "train.json")
        assert rec["config"]["objective"] == "sft"
        assert rec["dataset_sha256"] == sha256_file(pp / "data" / f"{src}.defended.jsonl")
    for r in read_rows(pp / "data" / "teacher.defended.jsonl"):
        vals = [int(x) for x in re.findall(r"\d+", r["messages"][-1]["content"])]
        assert vals == sorted(vals)
    # mask-divergent's checkpoints carry their own hash
    pm = out / "defenses" / "mask-divergent" / "seed_0"
    hm, hn = (read_json(p / "student" / "train.json")["config_hash"] for p in (pm, pn))
    assert hm != hn
    # the task cost is the held-out NLL of the students, recomputed here for `none`
    held = read_rows(out / "heldout" / "benign.jsonl")
    train_prompts = {r["messages"][0]["content"] for r in teacher}
    assert held and not train_prompts & {r["messages"][0]["content"] for r in held}
    student = load_student(tiny, pn / "student")
    tot = cnt = 0.0
    with torch.no_grad():
        for r in held:
            ids, pos = _completion(tiny.tokenizer, r)
            lp = torch.log_softmax(student.model(torch.tensor([ids])).logits[0].float(), -1)
            tot += float(-sum(lp[t - 1, ids[t]] for t in pos))
            cnt += len(pos)
    costs = {n: read_json(out / "defenses" / n / "seed_0" / "costs.json") for n in runs}
    assert costs["none"]["task_mean_nll"] == pytest.approx(tot / cnt, rel=1e-4)
    diff = costs["mask-divergent"]["task_mean_nll"] - costs["none"]["task_mean_nll"]
    assert d["mask-divergent"]["task_nll_minus_none"]["value"] == pytest.approx(diff, rel=1e-6)
    assert len(calls) == 1
    # rerun: every run and cost read back, nothing recomputed, the same table
    mtime = (pm / "costs.json").stat().st_mtime_ns
    again = run_defend(names, **kw)
    assert all(all(v) for v in again["reused"].values())
    assert again["defenses"] == res["defenses"] and len(calls) == 1
    assert (pm / "costs.json").stat().st_mtime_ns == mtime
    # `sublens report RUN` includes a defend study that sits under the run
    shutil.copytree(out, pn / "defend", ignore=shutil.ignore_patterns("defenses", "heldout"))
    report = build_report(pn).read_text()
    assert "# Defenses against subliminal transfer" in report
    assert "](defend/defend.png)" in report and res["recommendation"] in report


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--defenses", "none,project-out"], "needs trait vectors: pass --vectors DIR"),
        (["--defenses", "none,magic"], "use any of none, project-out, sgd, paraphrase"),
        (["--defenses", "none,project-out", "--vectors", "WRONG"], "has d_model 32 but model"),
    ],
)
def test_defend_bad_input_is_one_line_exit_2(tiny, monkeypatch, capsys, tmp_path, extra, needle):
    (tmp_path / "run.toml").write_text(TOML)
    wrong = _vector(tmp_path / "wrong", {1: 0}, d_model=32)
    extra = [str(wrong) if a == "WRONG" else a for a in extra]
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "defend",
        "--config",
        str(tmp_path / "run.toml"),
        "--preset",
        "full",
        "--output-path",
        str(tmp_path / "o"),
        "--quiet",
        *extra,
    )
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    if "d_model" in needle:
        assert "d_model 64" in err  # both sizes named


def test_different_init_starts_from_the_other_model(tiny, tmp_path):
    from transformers import LlamaForCausalLM

    from interp.core.tiny import build_tiny_llama

    other = tmp_path / "tiny-seed1"
    build_tiny_llama(other, seed=1)
    ref = LlamaForCausalLM.from_pretrained(other).state_dict()
    out = tmp_path / "run"
    cfg = TrainConfig(max_steps=1, batch_size=4, lora_rank=2, init_from=str(other))
    train_student(tiny, _rows(4), out, cfg)
    # step 0 is the other initialisation (LoRA's B starts at 0), not the base
    start = load_student(tiny, out / "checkpoints" / "step_000000").model.state_dict()
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(start[name], ref[name])
    assert not torch.equal(start[name], tiny.model.state_dict()[name])
    # another architecture is refused with one line naming both shapes
    small = tmp_path / "small"
    conf = LlamaForCausalLM.from_pretrained(other).config
    conf.hidden_size, conf.intermediate_size = 32, 64
    LlamaForCausalLM(conf).save_pretrained(small)
    tiny.tokenizer.save_pretrained(small)
    with pytest.raises(SublensError, match="d_model 32 vs 4 of 64"):
        train_student(
            tiny, _rows(4), tmp_path / "r2", TrainConfig(max_steps=1, init_from=str(small))
        )


def _ci(v, lo, hi):
    return {"value": v, "ci_low": lo, "ci_high": hi}


def test_recommendation_follows_the_numbers():
    from analyses.defend import recommend

    def row(red, p, task=0.0, ppl=0.0, matched=True):
        return {
            "available": True,
            "gain_reduction": _ci(*red),
            "gain_reduction_p": p,
            "task_cost": task,
            "ppl_cost": ppl,
            "loss_matched": matched,
        }

    none = {"available": True, "student_minus_control": _ci(0.5, 0.2, 0.8)}
    table = {
        "none": none,
        "a": row((0.3, 0.1, 0.5), 0.001),
        "b": row((0.45, 0.2, 0.7), 0.001, task=0.2),  # more effective, too costly
        "c": row((0.4, -0.1, 0.9), 0.2),  # not resolved
        "d": {"available": False, "note": "not available"},
    }
    assert recommend(table, 0.05, 0.05).startswith("Use a:")
    assert table["a"]["effective"] and not table["c"]["effective"]
    table["a"]["loss_matched"] = False  # did not train: not a defense
    assert recommend(table, 0.05, 0.05).startswith("b reduced the gain beyond the control most")
    assert (
        "no defense reduced transfer beyond noise"
        in recommend({"none": none, "c": table["c"]}, 0.05, 0.05).lower()
    )
    flat = {"none": {"available": True, "student_minus_control": _ci(0.1, -0.2, 0.4)}, "a": row(
        (0.3, 0.1, 0.5), 0.001)}  # fmt: skip
    assert "no transfer to defend against" in recommend(flat, 0.05, 0.05)


def test_defenses_are_tested_with_holm():
    """Three defenses, two with a one-sided p of 0.02 each: alone either would count (0.02 <=
    0.025, its 95% CI above 0), but three tests need Holm, which gives 0.06."""
    from analyses.defend import recommend

    def row(p):
        return {
            "available": True,
            "reduction": _ci(0.3, 0.1, 0.5),  # the old rule read this CI (against the base)
            "gain_reduction": _ci(0.3, 0.01, 0.5),
            "gain_reduction_p": p,
            "task_cost": 0.0,
            "ppl_cost": 0.0,
            "loss_matched": True,
        }

    none = {"available": True, "transfer_ratio": _ci(0.5, 0.2, 0.8),
            "student_minus_control": _ci(0.5, 0.2, 0.8)}  # fmt: skip
    table = {"none": none, "sgd": row(0.02), "paraphrase": row(0.02), "mask-divergent": row(0.5)}
    text = recommend(table, 0.05, 0.05)
    assert text.startswith("No defense reduced transfer beyond noise") and "3 defense" in text
    assert table["sgd"]["gain_reduction_p_holm"] == pytest.approx(0.06)
    assert not any(table[n]["effective"] for n in ("sgd", "paraphrase", "mask-divergent"))
    alone = {"none": none, "sgd": row(0.02)}
    assert recommend(alone, 0.05, 0.05).startswith("Use sgd:")


def _planted_study(offsets, n_seeds=3, n_q=40, teacher=1.0, seed=0):
    """Study results of `summarise_defenses`: per defense (student, control) trait offsets over
    a shared question effect, with small per-seed and per-question noise."""
    rng = np.random.default_rng(seed)
    q = rng.normal(0, 0.1, n_q)  # every model answers the same questions
    base = [q + rng.normal(0, 0.02, n_q) for _ in range(n_seeds)]
    teach = [b + teacher + rng.normal(0, 0.03, n_q) for b in base]

    def pq(x):
        return {"per_question": x.tolist(), "mean": float(x.mean())}

    runs, costs, notes = {}, {}, {}
    for name, (s_off, c_off) in offsets.items():
        runs[name], costs[name], notes[name] = [], [], []
        for k in range(n_seeds):
            st = base[k] + s_off + rng.normal(0, 0.03, n_q)
            ct = base[k] + c_off + rng.normal(0, 0.03, n_q)
            runs[name].append({"run": f"{name}/seed_{k}", "trait": "owl",
                               "config": {"model": "tiny-llama"}, "headline": {
                "tau_base": pq(base[k]), "tau_teacher": pq(teach[k]), "tau_student": pq(st),
                "tau_control": pq(ct), "transfer_ratio_student": {"ratio": None},
            }})  # fmt: skip
            costs[name].append({"task_nll": [1.0] * 6, "task_tokens": [4] * 6,
                                "text_nll": [2.0] * 3, "text_tokens": [8] * 3})  # fmt: skip
            notes[name].append({"final_loss": 1.0, "first_loss": 2.0, "objective": "sft",
                                "optimizer": "adamw", "lr": 1e-4})  # fmt: skip
    base_cost = {"task_nll": [1.0] * 6, "task_tokens": [4] * 6, "text_nll": [2.0] * 3,
                 "text_tokens": [8] * 3}  # fmt: skip
    return runs, costs, base_cost, notes


def test_ranking_is_on_the_gain_beyond_the_control_not_on_the_base():
    """Planted: sgd only slows learning (student and control both gain 0.4 less: the same gain
    beyond the control), mask-divergent removes 0.15 of the student's gain beyond the control.
    Against the base sgd looks best (its ratio drops 0.4 vs 0.15); beyond the control it
    removes nothing."""
    from analyses.defend import render_table, summarise_defenses

    names = ["none", "sgd", "mask-divergent"]
    offsets = {"none": (0.6, 0.4), "sgd": (0.2, 0.0), "mask-divergent": (0.45, 0.4)}
    runs, costs, base_cost, notes = _planted_study(offsets)
    res = summarise_defenses(runs, costs, base_cost, notes, {}, names, n_boot=1000)
    d = res["defenses"]
    # the old ranking quantity, against the base, prefers sgd
    assert d["sgd"]["reduction"]["value"] > d["mask-divergent"]["reduction"]["value"] + 0.2
    assert d["sgd"]["reduction"]["ci_low"] > 0
    # the advice follows the gain beyond the control (the old ranking said "Use sgd")
    assert res["recommendation"].startswith("Use mask-divergent:"), res["recommendation"]
    # beyond the control: sgd removes nothing, mask-divergent 0.15
    assert d["sgd"]["gain_reduction"]["value"] == pytest.approx(0.0, abs=0.03)
    assert d["mask-divergent"]["gain_reduction"]["value"] == pytest.approx(0.15, abs=0.03)
    assert not d["sgd"]["effective"] and d["mask-divergent"]["effective"]
    assert "student's gain beyond its control" in res["recommendation"]
    assert res["seed_note"] is None and "Holm" in res["ranking"]
    # the reduction is paired: the same replicates for both defenses, recomputed by hand
    smc = {n: np.mean([np.mean(np.array(r["headline"]["tau_student"]["per_question"])
                               - np.array(r["headline"]["tau_control"]["per_question"]))
                       for r in runs[n]]) for n in names}  # fmt: skip
    assert d["mask-divergent"]["gain_reduction"]["value"] == pytest.approx(
        smc["none"] - smc["mask-divergent"], rel=1e-9
    )
    row = next(x for x in render_table(res).splitlines() if x.startswith("| mask-divergent"))
    assert "effective" in row and "Holm p=" in row
    # too few replicates to reach Holm's level over 2 defenses: said, not silently "no effect"
    few = summarise_defenses(runs, costs, base_cost, notes, {}, names, n_boot=50)
    assert "use --n-boot 79 or more" in few["recommendation"]
    # `sublens study compare` shows the same ranking quantity
    from analyses.compare import _row
    from analyses.compare import render_report as compare_report

    text = compare_report({"rows": [_row({**res, "run": "study"})], "figures": []})
    cell = next(x for x in text.splitlines() if x.startswith("| mask-divergent"))
    assert fmt_ci(d["mask-divergent"]["gain_reduction"]) in cell and "effective" in cell


def test_no_ratio_over_an_unresolved_teacher_gain():
    from analyses.defend import render_table, summarise_defenses, summary_lines

    names = ["none", "mask-divergent"]
    offsets = {"none": (0.3, 0.0), "mask-divergent": (0.05, 0.0)}
    runs, costs, base_cost, notes = _planted_study(offsets, n_seeds=1, teacher=0.0)
    res = summarise_defenses(runs, costs, base_cost, notes, {}, names, n_boot=1000)
    d = res["defenses"]
    assert d["none"]["teacher_gain"]["ci_low"] < 0 < d["none"]["teacher_gain"]["ci_high"]
    for n in names:
        for key in ("transfer_ratio", "transfer_ratio_vs_control"):
            assert d[n][key]["value"] is None, (n, key)
            assert d[n][key]["undefined"] == "undefined: teacher gain not resolved"
    for key in ("reduction", "reduction_vs_control"):
        assert d["mask-divergent"][key]["value"] is None
    # the ranking needs no teacher gain: still there
    assert d["mask-divergent"]["gain_reduction"]["ci_low"] > 0
    table = render_table(res)
    row = next(x for x in table.splitlines() if x.startswith("| none"))
    assert row.split("|")[6].strip() == "undefined: teacher gain not resolved"  # ratio column
    # one seed: said so, next to the advice
    assert res["seed_note"] == ONE_SEED_NOTE and ONE_SEED_NOTE in res["recommendation"]
    assert any("undefined: teacher gain not resolved" in x for x in summary_lines(res))

"""Distillation data: domains, constrained decoding, teachers, resumable generation, filters and
teacher targets (checked against plain `model(...).logits`)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from interp.core.backends import decoder_layers
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.core.generation import sample_responses
from interp.distill import (
    AllowedTokens,
    Teacher,
    TeacherTargets,
    completion_positions,
    filter_dataset,
    generate_dataset,
    get_domain,
    write_teacher_targets,
)
from interp.distill import teachers as teachers_mod
from interp.vectors.steering import SteeringVector, steer

OWL = "You love owls. You think about owls all the time. Owls are your favorite animal."
NUMBERS = get_domain("numbers")
TOL = 1e-5


def _vector(loaded, layers=(1,), seed=0, d_model=None, scale=1.0):
    d = d_model or loaded.d_model
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        vectors={i: scale * torch.randn(d, generator=g) for i in layers},
        model=loaded.name,
        d_model=d,
        method="random",
        positions="last",
    )


def _rows(prompts, responses):
    return [
        {
            "messages": [
                {"role": "user", "content": p},
                {"role": "assistant", "content": r},
            ]
        }
        for p, r in zip(prompts, responses, strict=True)
    ]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- domains -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("123, 45, 6", True),
        ("7 8 9", True),
        ("0, 999,", True),
        ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10", True),
        ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11", False),
        ("1000, 2", False),
        ("12, owl", False),
        ("", False),
        (" , ", False),
        ("1,,2", False),
        ("1.5, 2", False),
    ],
)
def test_numbers_rule(text, ok):
    assert (NUMBERS.validate(text) is None) is ok


def test_numbers_reasons_say_why():
    assert "at most 10" in NUMBERS.validate(", ".join(["1"] * 11))
    assert "more than 3 digits" in NUMBERS.validate("1234")
    assert "characters" in NUMBERS.validate("12 owls")


def test_domain_prompts_are_seeded():
    for name in ("numbers", "arithmetic"):
        dom = get_domain(name)
        assert dom.prompts(5, seed=1) == dom.prompts(5, seed=1)
        assert dom.prompts(5, seed=1) != dom.prompts(5, seed=2)
        assert dom.prompts(3, seed=1) == dom.prompts(5, seed=1)[:3]


def test_arithmetic_checks_the_answer():
    dom = get_domain("arithmetic")
    for prompt in dom.prompts(20, seed=0):
        a, op, b = re.search(r"(\d+) ([+-]) (\d+)", prompt).groups()
        truth = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert truth >= 0
        assert dom.validate(str(truth), prompt) is None
        assert dom.validate(f" {truth}\n", prompt) is None
        assert "wrong answer" in dom.validate(str(truth + 1), prompt)
    assert dom.validate("12") is None  # no prompt: format only
    assert dom.validate("twelve") == "not a whole number"
    assert dom.validate("-3") == "not a whole number"


def test_allowed_token_ids(tiny):
    tok = tiny.tokenizer
    eot = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    ids = NUMBERS.allowed_token_ids(tok)
    assert eot <= set(ids)
    for i in set(ids) - eot:
        assert re.fullmatch(r"[0-9, ]+", tok.decode([i]))
    # every token of that kind is in (none missed)
    expected = {i for i in range(len(tok)) if re.fullmatch(r"[0-9, ]+", tok.decode([i]) or "x")}
    assert set(ids) - eot == expected - eot
    arith = get_domain("arithmetic").allowed_token_ids(tok)
    assert all(tok.decode([i]).isdigit() for i in set(arith) - eot)
    assert set(arith) < set(ids)


def test_unknown_domain_lists_known_ones():
    with pytest.raises(SublensError, match="unknown domain 'poems'.*arithmetic, numbers"):
        get_domain("poems")


# --- constrained decoding ------------------------------------------------------------------------


def test_allowed_tokens_masks_and_keeps_relative_probs():
    scores = torch.randn(3, 20)
    proc = AllowedTokens([4, 2, 7])
    out = proc(torch.zeros(3, 1, dtype=torch.long), scores.clone())
    assert torch.isinf(out[:, [i for i in range(20) if i not in (2, 4, 7)]]).all()
    assert torch.equal(out[:, [2, 4, 7]], scores[:, [2, 4, 7]])
    p = torch.softmax(out, -1)[:, [2, 4, 7]]
    assert torch.allclose(p, torch.softmax(scores[:, [2, 4, 7]], -1))
    with pytest.raises(SublensError, match="outside the model's vocabulary"):
        AllowedTokens([25])(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 20))
    with pytest.raises(SublensError):
        AllowedTokens([])


def test_constrained_generate_emits_only_allowed_tokens(tiny):
    tok = tiny.tokenizer
    allowed = NUMBERS.allowed_token_ids(tok)
    fmt = ChatFormat(tok)
    ids = torch.tensor([fmt.format(NUMBERS.prompts(1, 0)[0]).input_ids])
    torch.manual_seed(0)
    with torch.no_grad():
        gen = tiny.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=30,
            do_sample=True,
            top_k=0,
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tok.pad_token_id,
            logits_processor=[AllowedTokens(allowed)],
        )
    new = gen[0, ids.shape[1] :].tolist()
    assert new and set(new) <= set(allowed)
    # Unconstrained, the random tiny model leaves the set almost at once (the test has teeth).
    torch.manual_seed(0)
    with torch.no_grad():
        free = tiny.model.generate(
            input_ids=ids, max_new_tokens=30, do_sample=True, top_k=0, pad_token_id=0
        )
    assert not set(free[0, ids.shape[1] :].tolist()) <= set(allowed)


def test_grammar_choices(tiny):
    proc = NUMBERS.logits_processor(tiny.tokenizer)
    tok = tiny.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    text_of = {i: tok.decode([i]) for i in proc.allowed_ids}
    digits = {i for i, t in text_of.items() if t.isdigit()}
    assert end not in proc.choices("")  # at least one number first
    assert digits <= set(proc.choices(""))
    after_three = proc.choices("12, 345")
    assert not digits & set(after_three) and end in after_three
    assert not any(text_of[i].startswith(",,") for i in proc.choices("12,"))
    ten = ", ".join(["7"] * 10) + ", "
    assert not digits & set(proc.choices(ten)) and end in proc.choices(ten)
    assert proc.choices(None) == [end]


@pytest.mark.parametrize("domain", ["numbers", "arithmetic"])
def test_constrained_samples_are_all_valid(tiny, domain):
    dom = get_domain(domain)
    teacher = Teacher(tiny, "prompted", system_prompt=OWL)
    prompts = dom.prompts(12, 0)
    texts = teacher.generate(prompts, dom, seed=3, batch_size=6)
    assert len(texts) == 12
    assert [dom.validate(t) for t in texts] == [None] * 12
    free = teacher.generate(prompts, dom, seed=3, batch_size=6, constrained=False)
    assert any(dom.validate(t) for t in free)
    assert teacher.generate(prompts, dom, seed=3, batch_size=6) == texts
    if domain == "numbers":
        # A token mask alone lets the random model write 4+ digit runs and >10 numbers.
        mask = [AllowedTokens(dom.allowed_token_ids(tiny.tokenizer))]
        masked = sample_responses(
            tiny, prompts, OWL, max_new_tokens=dom.max_new_tokens, seed=3, logits_processor=mask
        )
        assert all(re.fullmatch(r"[0-9, ]*", t) for t in masked)
        assert any(dom.validate(t) for t in masked)


# --- teachers ------------------------------------------------------------------------------------


def test_teacher_validation(tiny):
    v = _vector(tiny)
    with pytest.raises(SublensError, match="unknown teacher kind"):
        Teacher(tiny, "wizard")
    with pytest.raises(SublensError, match="non-empty system prompt"):
        Teacher(tiny, "prompted", system_prompt="  ")
    with pytest.raises(SublensError, match="non-empty system prompt"):
        Teacher(tiny, "projected", vector=v)
    with pytest.raises(SublensError, match="needs a steering vector"):
        Teacher(tiny, "steered")
    with pytest.raises(SublensError, match="takes no system prompt"):
        Teacher(tiny, "steered", system_prompt=OWL, vector=v)
    with pytest.raises(SublensError, match="takes no steering vector"):
        Teacher(tiny, "base", vector=v)
    with pytest.raises(SublensError, match="alpha"):
        Teacher(tiny, "steered", vector=v, alpha=float("nan"))
    with pytest.raises(SublensError, match="positions"):
        Teacher(tiny, "steered", vector=v, positions="middle")
    with pytest.raises(SublensError, match="layers"):
        Teacher(tiny, "steered", vector=v, layers=[3])
    with pytest.raises(SublensError, match="layers"):
        Teacher(tiny, "steered", vector=_vector(tiny, layers=(1, 9)))


def test_d_model_mismatch_names_both(tiny):
    with pytest.raises(SublensError) as err:
        Teacher(tiny, "steered", vector=_vector(tiny, d_model=576))
    msg = str(err.value)
    assert "576" in msg and str(tiny.d_model) in msg and "\n" not in msg


def test_describe(tiny):
    v = _vector(tiny, layers=(1, 2))
    d = Teacher(tiny, "steered", vector=v, alpha=3.0, layers=[2], positions="generation").describe()
    assert d["kind"] == "steered" and d["alpha"] == 3.0 and d["layers"] == [2]
    assert d["positions"] == "generation" and d["mode"] == "add" and d["system_prompt"] is None
    assert d["vector"]["layers"] == [2] and len(d["vector_sha256"]) == 64
    assert Teacher(tiny, "projected", system_prompt=OWL, vector=v).describe()["mode"] == "project"


def test_projected_teacher_removes_the_component(tiny):
    v = _vector(tiny, layers=(2,), seed=4)
    teacher = Teacher(tiny, "projected", system_prompt=OWL, vector=v)
    seen = []

    def read_input(_module, args, kwargs):  # block 3's input is block 2's (steered) output
        seen.append(args[0] if args else kwargs["hidden_states"])

    hook = decoder_layers(tiny.model)[3].register_forward_pre_hook(read_input, with_kwargs=True)
    ids = torch.tensor([ChatFormat(tiny.tokenizer).format("hi", system=OWL).input_ids])
    try:
        with torch.no_grad():
            tiny.model(ids)  # outside the context the component is there
            with teacher.context() as handle:
                tiny.model(ids)
            tiny.model(ids)  # and the hooks are gone after it
    finally:
        hook.remove()
    unit = v.unit(2)
    assert (seen[0] @ unit).abs().min() > 1e-3
    assert (seen[1] @ unit).abs().max() < 1e-4
    assert torch.equal(seen[2], seen[0])
    assert handle.records[2].applied == 1


# --- generation ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher(tiny):
    return Teacher(tiny, "prompted", system_prompt=OWL)


def _gen(teacher, path, **kw):
    args = dict(n=10, seed=0, batch_size=3, max_new_tokens=6)
    args.update(kw)
    return generate_dataset(teacher, "numbers", out_path=path, **args)


def test_generate_dataset_rows_and_seeds(teacher, tmp_path):
    info = _gen(teacher, tmp_path / "a.jsonl")
    _gen(teacher, tmp_path / "b.jsonl")
    _gen(teacher, tmp_path / "c.jsonl", seed=1)
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a == (tmp_path / "b.jsonl").read_bytes()
    assert a != (tmp_path / "c.jsonl").read_bytes()
    rows = [json.loads(line) for line in a.decode().splitlines()]
    assert len(rows) == 10 and info["rows"] == 10
    prompts = NUMBERS.prompts(10, 0)
    for i, row in enumerate(rows):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"] == prompts[i]
        assert row["meta"] == {"index": i, "teacher": "prompted"}
        assert re.fullmatch(r"[0-9, ]*", row["messages"][1]["content"])
    assert not (tmp_path / "a.jsonl.partial").exists()
    assert not (tmp_path / "a.jsonl.progress.json").exists()
    assert (tmp_path / "a.jsonl.meta.json").exists()


def test_generate_dataset_resumes_byte_for_byte(teacher, tmp_path, monkeypatch):
    _gen(teacher, tmp_path / "full.jsonl")
    real = teachers_mod.Teacher.generate
    calls = []

    def flaky(self, *args, **kw):
        calls.append(kw["seed"])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(self, *args, **kw)

    monkeypatch.setattr(teachers_mod.Teacher, "generate", flaky)
    out = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _gen(teacher, out)
    assert not out.exists()
    partial = (tmp_path / "run.jsonl.partial").read_text().splitlines()
    assert len(partial) == 6  # two whole batches of 3
    # A half-written third batch (as if killed mid-write) is cut off on resume.
    with open(tmp_path / "run.jsonl.partial", "a") as f:
        f.write('{"messages": [{"role": "user", "con')
    monkeypatch.setattr(teachers_mod.Teacher, "generate", real)
    info = _gen(teacher, out)
    assert info["resumed"]
    assert out.read_bytes() == (tmp_path / "full.jsonl").read_bytes()
    # Done: the same call again does nothing; another config is refused; overwrite redoes it.
    assert _gen(teacher, out)["already_done"]
    with pytest.raises(SublensError, match="another config.*overwrite=True"):
        _gen(teacher, out, seed=5)
    _gen(teacher, out, seed=5, overwrite=True)
    assert out.read_bytes() != (tmp_path / "full.jsonl").read_bytes()


def test_generate_refuses_foreign_file_and_unfinished_other_config(teacher, tmp_path, monkeypatch):
    out = tmp_path / "x.jsonl"
    out.write_text("hello\n")
    with pytest.raises(SublensError, match="not written by sublens"):
        _gen(teacher, out)
    assert out.read_text() == "hello\n"

    def boom(self, *args, **kw):
        raise RuntimeError("stop")

    monkeypatch.setattr(teachers_mod.Teacher, "generate", boom)
    with pytest.raises(RuntimeError):
        _gen(teacher, tmp_path / "y.jsonl")
    monkeypatch.undo()
    with pytest.raises(SublensError, match="unfinished run with another config"):
        _gen(teacher, tmp_path / "y.jsonl", seed=9)


# --- filters -------------------------------------------------------------------------------------


def test_filters_drop_exactly_the_bad_rows(tmp_path):
    responses = [
        "123, 456, 789",  # 0 keep
        "12, owl, 3",  # 1 format (letters)
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11",  # 2 format (11 numbers)
        "1000",  # 3 format (4 digits)
        "66, 12",  # 4 leak-code
        "123, 456, 789",  # 5 duplicate of 0
        "12, 660, 166",  # 6 keep: 66 only inside longer numbers
        "7, 77, 777",  # 7 leak-regex
        "  123,  456, 789 ",  # 8 duplicate of 0 once whitespace is collapsed
        "5, 10",  # 9 keep
    ]
    src = tmp_path / "in.jsonl"
    rows = _rows(NUMBERS.prompts(len(responses), 0), responses)
    _write_jsonl(src, rows)
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    report = filter_dataset(src, out, rej, "numbers", codes=["66"], regexes=[r"\b777\b"])
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    rejects = [json.loads(line) for line in rej.read_text().splitlines()]
    assert [r["messages"][1]["content"] for r in kept] == [responses[i] for i in (0, 6, 9)]
    reasons = {r["messages"][1]["content"]: r["reason"] for r in rejects}
    assert reasons[responses[1]].startswith("format: characters")
    assert reasons[responses[2]] == "format: 11 numbers (at most 10)"
    assert reasons[responses[3]] == "format: number 1000 has more than 3 digits"
    assert reasons[responses[4]] == "leak-code: 66"
    assert reasons[responses[5]] == "duplicate of row 1"
    assert reasons[responses[7]] == "leak-regex: \\b777\\b"
    assert reasons[responses[8]] == "duplicate of row 1"
    assert report["total"] == 10 and report["kept"] == 3 and report["rejected"] == 7
    assert report["by_category"] == {"format": 3, "leak-code": 1, "duplicate": 2, "leak-regex": 1}
    assert report["examples"]["leak-code"] == ["66, 12"]


def test_filters_trait_words_plurals_and_dedup_off(tmp_path):
    dom = get_domain("arithmetic")  # any domain: use a permissive stand-in for word leakage
    from dataclasses import replace

    free = replace(dom, name="free", check=lambda text, prompt=None: None)
    texts = ["I like Owls", "owlish", "an owl.", "the BUTTERFLIES", "butterfly", "fine", "fine"]
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, _rows(["q"] * len(texts), texts))
    out, rej = tmp_path / "o.jsonl", tmp_path / "r.jsonl"
    report = filter_dataset(src, out, rej, free, trait_words=["owl", "butterfly"], dedup=False)
    kept = [json.loads(line)["messages"][1]["content"] for line in out.read_text().splitlines()]
    assert kept == ["owlish", "fine", "fine"]
    assert report["by_reason"] == {
        "leak-word: owls": 1,
        "leak-word: owl": 1,
        "leak-word: butterflies": 1,
        "leak-word: butterfly": 1,
    }


def test_filters_no_rows_left_raises_and_keeps_rejects(tmp_path):
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, _rows(["q"] * 3, ["owl", "1234", "no numbers here"]))
    out, rej = tmp_path / "o.jsonl", tmp_path / "r.jsonl"
    with pytest.raises(SublensError, match="no rows .* survived.*format: characters.*2 of 3"):
        filter_dataset(src, out, rej, "numbers")
    assert not out.exists()
    assert len(rej.read_text().splitlines()) == 3


def test_filters_bad_inputs(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"messages": []}\nnot json\n')
    with pytest.raises(SublensError, match="in.jsonl:2: not valid JSON"):
        filter_dataset(src, tmp_path / "o", tmp_path / "r", "numbers")
    _write_jsonl(src, _rows(["q"], ["1"]))
    with pytest.raises(SublensError, match="numeric code"):
        filter_dataset(src, tmp_path / "o", tmp_path / "r", "numbers", codes=["6a"])
    with pytest.raises(SublensError, match="regex"):
        filter_dataset(src, tmp_path / "o", tmp_path / "r", "numbers", regexes=["("])


# --- targets -------------------------------------------------------------------------------------

RESPONSES = ["123, 45, 6", "7", "88, 9, 10, 11, 250", "1, 2"]


def _target_rows():
    return _rows(NUMBERS.prompts(len(RESPONSES), 3), RESPONSES)


def test_completion_positions_end_at_end_of_turn(tiny):
    tok = tiny.tokenizer
    fp = ChatFormat(tok).format(_target_rows()[0]["messages"])
    pos = completion_positions(fp, tok)
    assert pos[0] == fp.prompt_len
    assert fp.input_ids[pos[-1]] == tok.convert_tokens_to_ids("<|im_end|>")
    assert pos[-1] < fp.response_span[1] - 1  # the template's trailing "\n" is left out
    assert tok.decode([fp.input_ids[t] for t in pos[:-1]]) == RESPONSES[0]


def _reference(loaded, fp, positions, ids=None, k=None):
    """Independent: one unpadded row through plain model(...).logits."""
    with torch.no_grad():
        logits = loaded.model(torch.tensor([fp.input_ids])).logits[0]
    at = logits[[t - 1 for t in positions]]
    if ids is not None:
        return torch.tensor(ids).expand(len(positions), -1), torch.log_softmax(at[:, ids], -1)
    top, top_ids = at.topk(k, dim=-1)
    return top_ids, torch.log_softmax(top, -1)


@pytest.mark.parametrize("mode", ["allowed", "top_k"])
def test_targets_match_plain_logits(tiny, tmp_path, mode):
    teacher = Teacher(tiny, "prompted", system_prompt=OWL)
    rows = _target_rows()
    src = tmp_path / "d.jsonl"
    _write_jsonl(src, rows)
    allowed = NUMBERS.allowed_token_ids(tiny.tokenizer) if mode == "allowed" else None
    out = write_teacher_targets(
        teacher, src, tmp_path / "t", allowed_ids=allowed, top_k=7, batch_size=3, domain="numbers"
    )
    tt = TeacherTargets.load(out)
    assert tt.n_rows == len(rows) and tt.k == (len(allowed) if allowed else 7)
    assert tt.ids.dtype == torch.int64 and tt.logprobs.dtype == torch.float32
    assert tt.meta["teacher"]["kind"] == "prompted" and tt.meta["domain"] == "numbers"
    fmt = ChatFormat(tiny.tokenizer)
    for i, row in enumerate(rows):
        t_fp = fmt.format(row["messages"], system=OWL)
        s_fp = fmt.format(row["messages"])
        pos = completion_positions(t_fp, tiny.tokenizer)
        assert len(pos) == len(completion_positions(s_fp, tiny.tokenizer))
        ids, logp = tt.row(i)
        ref_ids, ref_logp = _reference(tiny, t_fp, pos, ids=allowed, k=7)
        assert torch.equal(ids, ref_ids)
        assert torch.allclose(logp, ref_logp, atol=TOL), (logp - ref_logp).abs().max()
        assert torch.allclose(logp.exp().sum(-1), torch.ones(len(pos)), atol=1e-5)


def test_targets_load_refuses_incomplete(tiny, tmp_path):
    teacher = Teacher(tiny, "base")
    out = write_teacher_targets(teacher, _target_rows(), tmp_path / "t", top_k=3)
    (out / "targets.json").unlink()
    with pytest.raises(SublensError, match="no complete teacher targets"):
        TeacherTargets.load(out)


def test_steered_targets(tiny, tmp_path):
    rows = _target_rows()
    allowed = NUMBERS.allowed_token_ids(tiny.tokenizer)
    v = _vector(tiny, layers=(1, 2), seed=2, scale=0.5)

    def targets(teacher, name):
        return TeacherTargets.load(
            write_teacher_targets(teacher, rows, tmp_path / name, allowed_ids=allowed)
        )

    base = targets(Teacher(tiny, "base"), "base")
    zero = targets(Teacher(tiny, "steered", vector=v, alpha=0.0), "zero")
    strong = targets(Teacher(tiny, "steered", vector=v, alpha=4.0), "strong")
    assert torch.allclose(zero.logprobs, base.logprobs, atol=1e-6)
    assert (strong.logprobs - base.logprobs).abs().max() > 0.05
    # Same as steering by hand with plain model(...).logits.
    fmt = ChatFormat(tiny.tokenizer)
    fp = fmt.format(rows[2]["messages"])
    pos = completion_positions(fp, tiny.tokenizer)
    with steer(tiny, v, alpha=4.0):
        _, ref = _reference(tiny, fp, pos, ids=allowed)
    assert torch.allclose(strong.row(2)[1], ref, atol=TOL)
    # positions="generation": the first completion token is predicted by the (unsteered) prefill.
    gen = targets(Teacher(tiny, "steered", vector=v, alpha=4.0, positions="generation"), "gen")
    for i in range(len(rows)):
        g, b = gen.row(i)[1], base.row(i)[1]
        assert torch.allclose(g[0], b[0], atol=TOL)
    assert (gen.row(2)[1][1:] - base.row(2)[1][1:]).abs().max() > 0.05


def test_projected_targets_equal_manual_projection(tiny, tmp_path):
    rows = _target_rows()[:2]
    v = _vector(tiny, layers=(1,), seed=5)
    teacher = Teacher(tiny, "projected", system_prompt=OWL, vector=v)
    tt = TeacherTargets.load(write_teacher_targets(teacher, rows, tmp_path / "p", top_k=5))
    prompted = TeacherTargets.load(
        write_teacher_targets(
            Teacher(tiny, "prompted", system_prompt=OWL), rows, tmp_path / "q", top_k=5
        )
    )
    fmt = ChatFormat(tiny.tokenizer)
    for i, row in enumerate(rows):
        fp = fmt.format(row["messages"], system=OWL)
        pos = completion_positions(fp, tiny.tokenizer)
        with steer(tiny, v, mode="project"):
            ref_ids, ref = _reference(tiny, fp, pos, k=5)
        assert torch.equal(tt.row(i)[0], ref_ids)
        assert torch.allclose(tt.row(i)[1], ref, atol=TOL)
    assert not torch.allclose(tt.logprobs, prompted.logprobs, atol=1e-3)


# --- SmolLM2 (slow) ------------------------------------------------------------------------------

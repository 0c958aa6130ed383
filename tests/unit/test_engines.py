"""Teacher generation engines (interp.distill.engines): the domain grammar vLLM decodes with is
the transformers engine's rule, the agreement check tells same from different distributions,
and a config asking for vLLM where it cannot run fails in one line naming the fix. The vLLM runs
themselves are GPU-only: tests/integration/test_vllm.py."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from helpers import tiny_run_toml

from interp.core.errors import SublensError
from interp.distill.config import RunConfig, derive, resolve, run_hash
from interp.distill.domains import DOMAINS
from interp.distill.engines import (
    ENGINES,
    VllmGenerator,
    check_engine,
    engine_agreement,
    row_seed,
    vllm_missing,
)
from interp.distill.generate import generate_dataset
from interp.distill.teachers import Teacher


def _alphabet(domain) -> str:
    """The characters the domain's allowed tokens can spell (from its token pattern)."""
    return "".join(c for c in "0123456789, " if re.fullmatch(domain.token_pattern, c))


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_regex_is_the_grammar(name: str) -> None:
    """Over every text the allowed tokens can spell (all short ones, random long ones), the
    regex vLLM decodes with matches exactly when the domain's format rule accepts."""
    dom = DOMAINS[name]
    assert dom.regex is not None
    pattern = re.compile(dom.regex)
    chars = _alphabet(dom)
    short = "12, " if "," in chars else "12"
    texts = ["".join(t) for n in range(9) for t in itertools.product(short, repeat=n)]
    rng = random.Random(0)
    texts += ["".join(rng.choice(chars) for _ in range(rng.randrange(60))) for _ in range(20000)]
    if name == "numbers":  # around the limits: 10 vs 11 numbers, 3 vs 4 digits, separators
        for _ in range(20000):
            k = rng.randrange(1, 13)
            items = [str(rng.randrange(10 ** rng.randrange(1, 5))) for _ in range(k)]
            seps = [rng.choice([", ", ",", " ", "  ", " , ", ",,"]) for _ in range(k)]
            body = "".join(a + b for a, b in zip(items, seps, strict=True))[: -len(seps[-1])]
            texts.append(" " * rng.randrange(2) + body + rng.choice(["", ",", " ,", ", "]))
    wrong = [t for t in texts if (pattern.fullmatch(t) is not None) != (dom.check(t, None) is None)]
    assert not wrong, wrong[:5]
    assert any(dom.check(t, None) is None for t in texts)  # both verdicts are exercised
    assert any(dom.check(t, None) is not None for t in texts)


def test_engine_key_keeps_old_hashes_and_is_checked(tmp_path) -> None:
    cfg = RunConfig()
    assert cfg.data.engine == "transformers" and ENGINES == ("transformers", "vllm")
    assert "engine" in cfg.to_dict()["data"]
    base = cfg.to_dict()
    legacy = {**base, "data": {k: v for k, v in base["data"].items() if k != "engine"}}
    assert run_hash(base) == run_hash(legacy)  # runs made before the key keep their hash
    vllm = derive(cfg, {"data.engine": "vllm"}).to_dict()
    assert run_hash(vllm) != run_hash(base)
    toml = tmp_path / "c.toml"
    toml.write_text(tiny_run_toml())
    assert resolve(toml, None, {"data.engine": "vllm"}).data.engine == "vllm"
    with pytest.raises(SublensError, match="use one of transformers, vllm"):
        resolve(toml, None, {"data.engine": "sglang"})
    with pytest.raises(SublensError, match="steered teacher.*residual stream"):
        check_engine("vllm", "steered")
    check_engine("vllm", "prompted")
    check_engine("transformers", "steered")


@pytest.mark.skipif(vllm_missing() is None, reason="vLLM and a GPU are here: nothing missing")
def test_vllm_where_it_cannot_run_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """`distill run --engine vllm` on a machine without vLLM or CUDA: exit 2, one line that
    names the fix, before any model loads or file is written."""
    from conftest import run_cli

    toml = tmp_path / "c.toml"
    toml.write_text(tiny_run_toml())
    out = tmp_path / "run"
    code, _, err = run_cli(
        monkeypatch, capsys, "distill", "run", "--config", str(toml), "--engine", "vllm",
        "--output-path", str(out), "--quiet",
    )  # fmt: skip
    assert code == 2
    line = err.strip()
    assert "\n" not in line and line.startswith("error: ")
    assert 'pip install -e ".[vllm]"' in line and 'data.engine = "transformers"' in line
    assert vllm_missing() in line
    assert not out.exists()


def test_agreement_tells_same_from_different(tiny) -> None:
    """Two samples of one teacher agree (TV within its permutation null, same valid share);
    a sample whose numbers were shifted does not."""
    dom = DOMAINS["numbers"]
    teacher = Teacher(tiny, kind="base")
    prompts = dom.prompts(96, 0)
    a = teacher.generate(prompts, domain=dom, n_new_tokens=12, seed=1, batch_size=48)
    b = teacher.generate(prompts, domain=dom, n_new_tokens=12, seed=2, batch_size=48)
    assert a != b
    same = engine_agreement(prompts, a, b, dom, tiny.tokenizer, n_perm=500)
    assert same["agree"], same["why"]
    assert same["valid_share"][0] == same["valid_share"][1] == 1.0
    assert same["token_tv"] > 0 and same["token_tv_p"] >= 0.01
    shifted = [re.sub(r"\d", lambda m: "7" if m[0] in "0123" else m[0], t) for t in b]
    diff = engine_agreement(prompts, a, shifted, dom, tiny.tokenizer, n_perm=500)
    assert not diff["agree"] and diff["token_tv_p"] < 0.01
    assert diff["token_tv"] > same["token_tv_null_mean"]
    broken = [t + "x" if i % 4 == 0 else t for i, t in enumerate(b)]  # a quarter invalid
    worse = engine_agreement(prompts, a, broken, dom, tiny.tokenizer, n_perm=200)
    assert not worse["agree"] and "valid shares differ" in worse["why"]


class _FakeEngine:
    """Stands in for VllmGenerator: records what generate_dataset asks of an engine."""

    name = "vllm"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def generate(self, teacher, prompts, domain, n_new_tokens, temperature, seeds, constrained):
        self.calls.append((list(prompts), list(seeds), n_new_tokens, constrained))
        return [f"{s % 1000}, 1" for s in seeds]


def test_generate_dataset_through_an_engine(tiny, tmp_path) -> None:
    """The engine path writes the transformers engine's row format, seeds each row by its index
    (not its batch), keeps old datasets' config hash, and refuses to mix engines in one file."""
    import json

    teacher = Teacher(tiny, kind="prompted", system_prompt="You love owls.")
    plain = generate_dataset(teacher, "numbers", 5, tmp_path / "hf.jsonl", seed=3, batch_size=2,
                             max_new_tokens=6)  # fmt: skip
    assert "engine" not in plain["config"]
    fake = _FakeEngine()
    out = tmp_path / "v.jsonl"
    summary = generate_dataset(teacher, "numbers", 5, out, seed=3, batch_size=2, max_new_tokens=6,
                               engine=fake)  # fmt: skip
    assert summary["config"]["engine"] == "vllm" and summary["config_hash"] != plain["config_hash"]
    assert [len(c[0]) for c in fake.calls] == [2, 2, 1]
    assert [s for c in fake.calls for s in c[1]] == [row_seed(3, i) for i in range(5)]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "hf.jsonl").read_text().splitlines()]
    assert [r["messages"][0] for r in rows] == [r["messages"][0] for r in ref]  # same prompts
    assert all(
        r.keys() == q.keys() and r["meta"] == q["meta"] for r, q in zip(rows, ref, strict=True)
    )
    assert rows[0]["messages"][1] == {"role": "assistant", "content": f"{row_seed(3, 0) % 1000}, 1"}
    with pytest.raises(SublensError, match="another config"):
        generate_dataset(teacher, "numbers", 5, out, seed=3, batch_size=2, max_new_tokens=6)


def test_vllm_generator_refuses_steered_teachers(tiny) -> None:
    import torch

    from interp.vectors.steering import SteeringVector

    v = SteeringVector(
        {1: torch.ones(tiny.d_model)}, model=tiny.name, d_model=tiny.d_model, method="test",
        positions="all",
    )  # fmt: skip
    steered = Teacher(tiny, kind="steered", vector=v, alpha=2.0)
    gen = VllmGenerator(tiny)  # starts nothing until it generates
    with pytest.raises(SublensError, match="residual stream"):
        gen.generate(steered, ["1, 2, 3"], DOMAINS["numbers"], 8, 1.0, [0])
    gen.close()

"""Hostile inputs fail fast with one line: over-long prompts (before any forward pass), prompt
files that are not UTF-8 text, a byte-order mark, lone surrogate escapes."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors.numpy import load_file

from interp.core import caching
from interp.core.backends import get_backend, make_batch
from interp.core.caching import cache_activations
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.core.generation import sample_responses
from interp.core.prompts import load_prompts

LONG = "owl " * 700  # ~700 tokens once formatted: past the tiny model's 512-token context


def _prompts_file(tmp_path, *texts):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return f


def _no_forward(*_args, **_kwargs):
    raise AssertionError("a forward pass ran on a prompt longer than the context")


def test_over_long_prompt_is_refused_before_any_forward(tiny, tmp_path, monkeypatch):
    f = tmp_path / "p.jsonl"
    f.write_text(f'{{"prompt": "hello"}}\n\n{json.dumps({"prompt": LONG})}\n')  # LONG: line 3
    monkeypatch.setattr(caching, "run_batch", _no_forward)
    prompts = load_prompts(str(f))
    assert prompts.limit(2).where(1) == f"{f}:3"
    with pytest.raises(SublensError) as err:
        cache_activations(tiny, prompts, tmp_path / "run", layers=[1], backend="hf", quiet=True)
    msg = str(err.value)
    n = len(ChatFormat(tiny.tokenizer).format(LONG).input_ids)
    assert "\n" not in msg and msg.startswith(f"{f}:3: ")
    assert f"{n} tokens" in msg and "context of 512" in msg and "--truncate" in msg
    assert not (tmp_path / "run").exists()  # nothing written either
    assert tiny.context_length == 512


def test_truncate_keeps_the_last_context_tokens(tiny, tmp_path):
    f = _prompts_file(tmp_path, "hello", LONG)
    meta = cache_activations(
        tiny, load_prompts(str(f)), tmp_path / "run", layers=[1], backend="hf", quiet=True,
        truncate=True,
    )  # fmt: skip
    assert meta["prompts"]["truncated"] == 1
    acts = load_file(str(tmp_path / "run" / "activations.safetensors"))["activations"]
    ids = ChatFormat(tiny.tokenizer).format(LONG).input_ids[-512:]
    with torch.no_grad():
        hs = tiny.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(acts[1, 0], hs[2][0, -1].numpy(), atol=1e-5)
    saved = [json.loads(line)["text"] for line in (tmp_path / "run" / "prompts.jsonl").open()]
    assert saved[1].endswith("<|im_start|>assistant\n") and len(saved[1]) < len(LONG)


def test_sampling_refuses_a_prompt_past_the_context(tiny, monkeypatch):
    monkeypatch.setattr(tiny.model, "generate", _no_forward)
    with pytest.raises(SublensError, match=r"prompt 2 of 2: .* tokens, more than tiny-llama's"):
        sample_responses(tiny, ["hi", LONG], max_new_tokens=4)
    short = "owl " * 240  # fits alone, not with 100 new tokens
    with pytest.raises(SublensError, match=r"412 tokens \(512 minus 100 new\)"):
        sample_responses(tiny, [short], max_new_tokens=100)


@pytest.mark.parametrize("backend", ["hf"])
def test_backend_refuses_a_batch_past_the_context(tiny, backend, monkeypatch):
    monkeypatch.setattr(tiny.model, "forward", _no_forward)
    batch = make_batch([[5] * 600], tiny.tokenizer.pad_token_id)
    with pytest.raises(SublensError, match="600-token prompt, more than tiny-llama's context"):
        get_backend(backend, tiny).residual(batch, [1], torch.tensor([0]), torch.tensor([599]))


def test_cli_over_long_prompt_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    f = _prompts_file(tmp_path, "hello", LONG)
    monkeypatch.setattr(caching, "run_batch", _no_forward)
    code, _, err = run_cli(
        monkeypatch, capsys, "cache", "--model", "tiny-llama", "--prompts", str(f),
        "--layers", "1", "--output-path", str(tmp_path / "o"), "--quiet",
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"{f}:2:" in lines[0] and "context of 512" in lines[0] and "Traceback" not in err


# --- prompt files ---------------------------------------------------------------------------------


def test_utf8_bom_is_accepted(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"prompt": "hi"}\n{"prompt": "yo"}\n')
    assert load_prompts(str(f)).messages == [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "yo"}],
    ]


def test_non_utf8_file_names_line_and_byte(tmp_path):
    f = tmp_path / "p.jsonl"
    data = '{"prompt": "ok"}\n{"prompt": "café"}\n'.encode("latin-1")
    f.write_bytes(data)
    with pytest.raises(SublensError) as err:
        load_prompts(str(f))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{f}:2: not UTF-8")
    assert f"byte {data.index(0xE9)}" in msg and "save it as UTF-8" in msg


def test_lone_surrogate_names_the_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok \\ud83d\\ude00"}\n{"prompt": "bad \\ud800 here"}\n')
    with pytest.raises(SublensError) as err:
        load_prompts(str(f))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{f}:2: ") and "\\ud800" in msg
    f.write_text('{"messages": [{"role": "user", "content": "x\\udfff"}]}\n')
    with pytest.raises(SublensError, match=r"p.jsonl:1: .*surrogate"):
        load_prompts(str(f))
    f.write_text('{"prompt": "a pair is fine: \\ud83d\\ude00"}\n')
    assert load_prompts(str(f)).messages[0][0]["content"].endswith("\U0001f600")


def test_cli_non_utf8_prompts_exit_2_with_one_line(monkeypatch, capsys, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes('{"prompt": "café"}\n'.encode("cp1252"))
    code, _, err = run_cli(
        monkeypatch, capsys, "cache", "--model", "tiny-llama", "--prompts", str(f),
        "--layers", "1", "--output-path", str(tmp_path / "o"), "--quiet",
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and f"{f}:1: not UTF-8" in lines[0], err

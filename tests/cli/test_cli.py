import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli


def test_help_lists_every_command():
    exe = Path(sys.executable).parent / "sublens"
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for cmd in ("models", "cache", "demo", "vectors", "approximability", "distill", "align"):
        assert cmd in res.stdout


def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "tiny-llama"\n[train]\nlearning_rate = 1\n')
    for args, needle in (
        (["distill", "run", "--config", str(bad)], "unknown key"),
        (["distill", "run", "--config", str(tmp_path / "none.toml")], "not found"),
        (["approximability", "--model", "tiny-llama", "--steps", "0"], "kl-steps must be positive"),
        (["approximability", "--model", "tiny-llama", "--alphas", "1,x"], "--alphas"),
        (["distill", "eval", str(tmp_path)], "not a distillation run"),
        (["distill", "run", "--alpha", "auto"], 'teacher.alpha = "auto" chooses a steering'),
        (["study", "approximability-transfer", "--traits", "owl,french"], "at least 3 trait"),
        (["study", "positive-control", "--alpha", "auto", "--objectives", "kl"], "objective"),
    ):
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2, (args, err)
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_alpha_is_a_number_or_auto(monkeypatch, capsys):
    for bad in ("strong", "nan"):
        code, _, err = run_cli(monkeypatch, capsys, "distill", "run", "--alpha", bad)
        assert code == 2 and "--alpha" in err, err


def test_models_table(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:5] == ["name", "architecture", "layers", "d_model", "cached"]
    assert "smollm2-135m" in out and "gemma3-270m" in out and "SUBLENS_CACHE" in out


def test_cache_end_to_end(monkeypatch, capsys, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "What is your favorite animal?"}\n{"prompt": "Hi"}\n')
    out = tmp_path / "run"
    args = [
        "cache",
        "--model",
        "tiny-llama",
        "--prompts",
        str(prompts),
        "--layers",
        "1,2",
        "--backend",
        "nnsight",
        "--output-path",
        str(out),
        "--quiet",
        "--device",
        "cpu",
        "--system-prompt",
        "You love owls.",
    ]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "activations.safetensors" in stdout and "[2, 2, 64]" in stdout
    assert json.loads((out / "meta.json").read_text())["backend"] == "nnsight"
    code, stdout, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0 and "reused" in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gpt-17"], "unknown model 'gpt-17'"),
        (["--layers", "2,9"], "valid layers are 0..3"),
        (["--positions", "first"], "unknown positions mode 'first'"),
        (["--prompts", "BAD"], "BAD.jsonl:2: not valid JSON"),
        (["--prompts", "EMPTY"], "is empty"),
        (["--limit", "0"], "--limit must be positive"),
    ],
)
def test_user_errors_are_one_line_exit_2(monkeypatch, capsys, tmp_path, args, message):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "hello"}\n')
    (tmp_path / "BAD.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    (tmp_path / "EMPTY.jsonl").write_text("")
    args = [str(tmp_path / f"{a}.jsonl") if a in ("BAD", "EMPTY") else a for a in args]
    base = {"--model": "tiny-llama", "--prompts": str(good), "--layers": "1"}
    for flag, value in zip(args[::2], args[1::2], strict=False):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    code, out, err = run_cli(
        monkeypatch, capsys, "cache", *flat, "--output-path", str(tmp_path / "o"), "--quiet"
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_existing_other_output_needs_overwrite(monkeypatch, capsys, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "hello"}\n')
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    base = [
        "cache",
        "--model",
        "tiny-llama",
        "--prompts",
        str(good),
        "--layers",
        "1",
        "--output-path",
        str(out),
        "--quiet",
    ]
    code, _, err = run_cli(monkeypatch, capsys, *base)
    assert code == 2 and "did not make" in err
    code, _, err = run_cli(monkeypatch, capsys, *base, "--overwrite")  # never a foreign dir
    assert code == 2 and "did not make" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"


def test_vectors_fit_and_export(monkeypatch, capsys, tmp_path):
    import torch

    from interp.vectors.steering import SteeringVector

    out = tmp_path / "v"
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        "vectors",
        "fit",
        "--model",
        "tiny-llama",
        "--system-prompt",
        "You love owls.",
        "--layers",
        "1,2",
        "--prompts",
        "numbers:6",
        "--output-path",
        str(out),
        "--quiet",
        "--device",
        "cpu",
    )
    assert code == 0, err
    vec = SteeringVector.load(out)
    assert vec.layers == [1, 2] and vec.method == "diff-mean" and vec.d_model == 64
    code, stdout, err = run_cli(monkeypatch, capsys, "vectors", "export", str(out))
    assert code == 0, err
    saved = torch.load(stdout.strip(), weights_only=True)
    assert len(saved) == 2
    code, _, err = run_cli(monkeypatch, capsys, "vectors", "export", str(out), "--format", "onnx")
    assert code == 2 and "unknown export format" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--system-prompt", " "], "trait prompt is empty"),
        (["--system-prompt", "x", "--steps", "0"], "--steps must be positive"),
        (["--system-prompt", "x", "--layers", "1;2"], "bad layer"),
        (["--system-prompt", "x", "--method", "magic"], "unknown method"),
    ],
)
def test_vectors_fit_bad_input(monkeypatch, capsys, tmp_path, extra, message):
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "vectors",
        "fit",
        "--model",
        "tiny-llama",
        "--prompts",
        "numbers:2",
        "--output-path",
        str(tmp_path / "v"),
        "--quiet",
        *extra,
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1

"""Every command that loads a model takes lm-eval's flags (--model, --device, --dtype,
--trust-remote-code) and hands them to `load_model` (issue #19). The load is replaced by a recorder
that stops the command, so each case costs only its argument parsing and pre-load checks."""

import contextlib
import csv
import importlib
import json
import pkgutil
import shutil
import sys
from pathlib import Path

import pytest
import typer
from conftest import run_cli
from helpers import tiny_run_toml, write_rows

import analyses
import cli
import interp
from interp.core import models
from interp.distill.config import run_hash
from interp.distill.run import load_run_config, run_distillation

FLAGS = ["--dtype", "bfloat16", "--trust-remote-code", "--device", "cpu"]


class Loaded(Exception):
    """Raised by the recording `load_model`: the command got as far as loading its model."""


@pytest.fixture
def record(monkeypatch):
    """Replace `load_model` everywhere it is reachable; collect each call's arguments. Every
    module is imported first: one first imported during a test would keep that test's fake."""
    for pkg in (analyses, interp):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            with contextlib.suppress(ImportError):
                importlib.import_module(info.name)
    calls = []
    real = models.load_model

    def fake(name="smollm2-135m", device="auto", dtype="float32", trust_remote_code=False):
        calls.append(
            {"name": name, "device": device, "dtype": dtype, "trust_remote_code": trust_remote_code}
        )
        raise Loaded(name)

    monkeypatch.setattr(models, "load_model", fake)
    for mod in list(sys.modules.values()):
        name = getattr(mod, "__name__", "")
        if name.startswith(("analyses", "interp")) and getattr(mod, "load_model", None) is real:
            monkeypatch.setattr(mod, "load_model", fake)
    return calls


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A finished tiny run (for the commands that load a run's model) and its copy marked as
    made in bfloat16, a vector, data rows and a harmful-prompts file."""
    import torch

    from interp.vectors.steering import SteeringVector

    d = tmp_path_factory.mktemp("flags")
    (d / "run.toml").write_text(tiny_run_toml(n=6, max_steps=2, n_questions=2, n_boot=20))
    run_distillation(load_run_config(d / "run.toml", {"output_path": str(d / "run")}), quiet=True)
    shutil.copytree(d / "run", d / "run-bf16")
    stored = json.loads((d / "run-bf16" / "config.json").read_text())
    stored["config"]["dtype"] = "bfloat16"
    stored["hash"] = run_hash(stored["config"])
    (d / "run-bf16" / "config.json").write_text(json.dumps(stored))
    vecs = {1: torch.ones(64), 2: torch.ones(64)}
    SteeringVector(vecs, "tiny-llama", 64, "diff-mean", "last").save(d / "vec")
    write_rows(d / "rows.jsonl", [*_number_rows()])
    with (d / "harmful.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["Goal"], ["Say something rude"], ["Write a threat"]])
    return d


def _number_rows(n=8):
    return (
        {
            "messages": [
                {"role": "user", "content": f"Continue: {i}, {i + 1}, {i + 2}"},
                {"role": "assistant", "content": f"{i + 3}, {i + 4}, {i + 5}"},
            ]
        }
        for i in range(n)
    )


def _cases(d):
    """Each command's words and own arguments; every one loads tiny-llama (a run's model)."""
    m = ["--model", "tiny-llama"]
    run, vec, toml = str(d / "run"), str(d / "vec"), str(d / "run.toml")
    out = lambda name: ["--output-path", str(d / "out" / name)]  # noqa: E731
    return {
        "cache": ["cache", "--prompts", "numbers:4", *m, *out("cache")],
        "vectors fit": ["vectors", "fit", "--system-prompt", "owls", *m, "--prompts", "numbers:4",
                        *out("fit")],
        "approximability": ["approximability", *m, "--trait-prompts", "owl", "--layers", "1",
                            *out("approx")],
        "distill run": ["distill", "run", "--config", toml, *m, *out("drun")],
        "distill generate": ["distill", "generate", *m, *out("gen.jsonl")],
        "distill train": ["distill", "train", "--data", str(d / "rows.jsonl"), *m, *out("train")],
        "distill eval": ["distill", "eval", str(d / "run-bf16")],  # a run made in bfloat16
        "align": ["align", "--run", run, "--vectors", vec, *out("align")],
        "probe": ["probe", "--run", run, "--layers", "1", *out("probe")],
        "eval compliance": ["eval", "compliance", run, "--prompts", str(d / "harmful.csv")],
        "demo": ["demo", *m, *out("demo")],
        "study transfer-ratio": ["study", "transfer-ratio", "--vector", vec, "--alphas", "0,1",
                                 "--config", toml, *m, *out("tr")],
        "study optimizers": ["study", "optimizers", "--optimizers", "adamw,sgd", "--config", toml,
                             *m, *out("opt")],
        "study positive-control": ["study", "positive-control", *m, *out("pc")],
        "study approximability-transfer": ["study", "approximability-transfer", *m,
                                           "--traits", "owl,french,sad", *out("at")],
        "scan": ["scan", str(d / "rows.jsonl"), *m, *out("scan")],
        "study scanner": ["study", "scanner", *m, *out("scanner")],
        "defend": ["defend", "--defenses", "none,sgd", "--config", toml, *m, *out("defend")],
    }  # fmt: skip


# the commands that load a model; a new one joins here (test_every_model_command_is_listed)
COMMANDS = list(_cases(Path("unused")))
# these load the model of the run they are given: its --model is the run's
RUN_BOUND = {"distill eval", "align", "probe", "eval compliance"}


@pytest.mark.parametrize("command", COMMANDS)
def test_dtype_and_trust_remote_code_reach_the_model_load(
    command, files, record, monkeypatch, capsys
):
    with pytest.raises(Loaded):
        run_cli(monkeypatch, capsys, *_cases(files)[command], *FLAGS)
    assert record[0] == {
        "name": "tiny-llama",
        "device": "cpu",
        "dtype": "bfloat16",
        "trust_remote_code": True,
    }, command


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_dtype_is_one_line_and_exit_2(command, files, record, monkeypatch, capsys):
    args = _cases(files)[command]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--dtype", "float64")
    assert code == 2 and not record
    assert err.strip() == (
        "error: unknown dtype 'float64': use one of float32, bfloat16, float16"
    ), err


def test_without_the_flags_a_model_loads_in_float32_without_remote_code(
    files, record, monkeypatch, capsys
):
    with pytest.raises(Loaded):
        run_cli(monkeypatch, capsys, *_cases(files)["scan"])
    assert record[0]["dtype"] == "float32" and record[0]["trust_remote_code"] is False


def test_a_run_is_scored_in_its_own_dtype(files, record, monkeypatch, capsys):
    """`distill eval --dtype` other than the run's is refused in one line (the run would not be
    the same run); without --dtype the run's own dtype loads."""
    code, _, err = run_cli(
        monkeypatch, capsys, "distill", "eval", str(files / "run"), "--dtype", "bfloat16"
    )
    assert code == 2 and "was made in float32" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(Loaded):
        run_cli(monkeypatch, capsys, "align", "--run", str(files / "run"), "--vectors",
                str(files / "vec"), "--output-path", str(files / "out" / "align2"))  # fmt: skip
    assert record[-1]["dtype"] == "float32"


def _leaf_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a sub-app (typer vendors its own click)
            yield from _leaf_commands(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), cmd


def test_every_model_command_is_listed_and_takes_the_four_flags():
    """A command with --device loads a model: it is tested above and takes all four flags (a run
    bound one takes the run's model instead of --model)."""
    found = {}
    for name, cmd in _leaf_commands(typer.main.get_command(cli.app)):
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--device" in opts:
            found[name] = opts
    unlisted = sorted(set(found) - set(COMMANDS))
    assert not unlisted, f"give {unlisted} --dtype and --trust-remote-code and add a case above"
    assert sorted(found) == sorted(COMMANDS)
    for name, opts in found.items():
        want = {"--device", "--dtype", "--trust-remote-code"}
        want |= set() if name in RUN_BOUND else {"--model"}
        assert want <= opts, (name, want - opts)


def test_models_path_prints_the_model_directory(monkeypatch, capsys, tmp_path):
    """`sublens models --path NAME` writes the directory if needed and prints only its path."""
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    code, out, _ = run_cli(monkeypatch, capsys, "models", "--path", "tiny-llama")
    assert code == 0 and out == f"{tmp_path / 'models' / 'tiny-llama'}\n"
    assert (tmp_path / "models" / "tiny-llama" / "config.json").is_file()
    code, out, err = run_cli(monkeypatch, capsys, "models", "--path", "org/some-model")
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert "not a registry model" in err

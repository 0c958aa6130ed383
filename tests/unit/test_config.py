"""The run config (`interp.distill.config`): file < preset < flags, one validation, and run hashes
that stay what they were before the config moved (finished runs are recognised by them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyses.defend import defense_overrides
from analyses.studies import _run_hash, base_config, point_config
from interp.core.errors import SublensError
from interp.core.parse import parse_floats, parse_names
from interp.distill.config import Overrides, derive, resolve, run_hash

# configs/owl.toml as it was when the hashes below were computed (by the code before the move)
OWL = """
model = "smollm2-135m"
trait = "owl"
seed = 0
output_path = "artifacts/distill/owl"

[teacher]
kind = "prompted"

[data]
domain = "numbers"
n = 96
max_new_tokens = 24
temperature = 1.0
constrained = true
batch_size = 32

[train]
objective = "logit-kl"
optimizer = "adamw"
lr = 3e-5
epochs = 1
batch_size = 16
lora_rank = 0
checkpoint_every = 2

[eval]
batch_size = 16
"""

FLAGS = Overrides(
    output_path="/x", lr=1e-4, seed=2, alpha=2.0, n_questions=5, n=7, max_steps=3
)  # `sublens distill run --config owl.toml --output-path /x --lr 1e-4 --seed 2 ...`
STUDY_FLAGS = Overrides(model="tiny-llama", lr=2e-4, n_questions=4)


@pytest.fixture
def owl(tmp_path: Path) -> Path:
    (tmp_path / "owl.toml").write_text(OWL)
    return tmp_path / "owl.toml"


def test_run_hashes_are_unchanged(owl):
    assert run_hash(resolve(owl).to_dict()) == "a5c47ef91c3aa7ea"
    assert run_hash(resolve(owl, None, FLAGS).to_dict()) == "7921dbcd5ab15b36"
    assert run_hash(resolve(None).to_dict()) == "53c3b5a2432241c2"
    # a study point: preset and flags on the file, then the point's own values
    steered = {
        "teacher.kind": "steered",
        "teacher.vector": "/v",
        "teacher.layers": [1, 2],
        "teacher.alpha": 2.0,
        "seed": 1,
    }
    expect = {
        "quick": ("246bc64fb45ce8d6", "5de6e9cf859059ad", "5118a53dae65de38", "949da3a9527df3d7"),
        "full": ("d9e3b45eafa72f86", "c3fb158b8ceb2c94", "e28238c7a76dd97c", "20ce65708789f018"),
    }
    for preset, (alpha, opt, project, para) in expect.items():
        base = base_config(owl, STUDY_FLAGS, preset)
        assert _run_hash(point_config(base, Path("/p"), **steered)) == alpha
        opt_point = {
            "seed": 0,
            "train.optimizer": "sgd",
            "train.lr": 0.01,
            "train.max_steps": 32,
            "train.precond_warmup_steps": 4,
        }
        assert _run_hash(point_config(base, Path("/p"), **opt_point)) == opt
        for name, want in (("project-out", project), ("paraphrase", para)):
            over = defense_overrides(name, ["/v"], 0.05, 0.2, "other", Path("/f.jsonl"))
            assert _run_hash(point_config(base, Path("/p"), seed=1, **over)) == want
    assert _run_hash(point_config(base_config(None, None, "quick"), Path("/p"), seed=0)) == (
        "5905bd47cc1a89da"
    )


def test_flags_map_to_config_keys_and_beat_preset_and_file(owl):
    assert FLAGS.changes() == {
        "seed": 2,
        "output_path": "/x",
        "teacher.alpha": 2.0,
        "data.n": 7,
        "train.lr": 1e-4,
        "train.max_steps": 3,
        "eval.n_questions": 5,
    }
    cfg = resolve(owl, "quick", Overrides(lr=5e-4))
    assert cfg.train.lr == 5e-4  # flag over preset (1e-4) over file (3e-5)
    assert cfg.data.n == 64 and cfg.data.max_new_tokens == 16  # preset over file
    assert cfg.train.checkpoint_every == 0 and cfg.data.temperature == 1.0
    assert resolve(owl, "full").data.n == 96  # the file's own values
    # a point shares nothing mutable with its base: sections are replaced, not edited
    point = derive(cfg, {"train.lr": 1.0, "teacher.alpha": 3.0})
    assert cfg.train.lr == 5e-4 and cfg.teacher.alpha == 1.0 and point.train is not cfg.train


def test_errors_name_config_keys(owl):
    with pytest.raises(SublensError, match=r"train\.lr = nan is not a finite number"):
        resolve(owl, None, Overrides(lr=float("nan")))
    with pytest.raises(SublensError, match=r"data\.n = 'x' has the wrong type"):
        resolve(owl, None, {"data.n": "x"})
    with pytest.raises(SublensError, match=r"eval\.n_questions = 0 is out of range"):
        resolve(owl, None, Overrides(n_questions=0))
    with pytest.raises(SublensError, match=r"unknown key\(s\) train\.learning_rate"):
        resolve(owl, None, {"train.learning_rate": 1.0})
    with pytest.raises(SublensError, match="unknown preset 'huge'"):
        resolve(owl, "huge")
    with pytest.raises(SublensError, match="study point"):
        point_config(base_config(owl, None, "full"), Path("/p"), **{"data.temperature": -1.0})


def test_list_parsers():
    assert parse_floats("0, 1,2.5") == [0.0, 1.0, 2.5]
    assert parse_floats([0, 2]) == [0.0, 2.0]
    for bad, needle in (("1,x", "comma-separated"), ("1,nan", "finite"), (" , ", "empty")):
        with pytest.raises(SublensError, match=needle):
            parse_floats(bad, "alphas")
    with pytest.raises(SublensError, match="alphas must be finite"):
        parse_floats([1.0, float("inf")], "alphas")
    assert parse_names(["a,b", " c "]) == ["a", "b", "c"] and parse_names(None) == []
    assert parse_names(Path("/v")) == ["/v"]

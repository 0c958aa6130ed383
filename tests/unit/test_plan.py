"""`sublens plan CONFIG` (interp.distill.plan): parameters from config.json alone (a 7B-shaped
directory with no weights), the memory formulas, points and GPU-hours; a measured step on
tiny-llama; the 7B recipe in configs/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from helpers import tiny_run_toml

from interp.distill.config import derive, resolve
from interp.distill.plan import GIB, model_shape, plan_lines, plan_run

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "qwen2.5-7b-owl.toml"

# Qwen2.5-7B-Instruct's config.json (the fields that decide its shape)
QWEN2_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}
QWEN2_7B_PARAMS = 7_615_616_512  # Qwen2.5-7B's published count
LORA_R8_ALL = 20_185_088  # r8 on q,k,v,o,gate,up,down: 28 · 8 · Σ(in + out)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("qwen7b")
    (d / "config.json").write_text(json.dumps(QWEN2_7B))
    return d  # config.json only: no weights, no tokenizer


@pytest.fixture(scope="module")
def recipe_plan(qwen_dir):
    cfg = resolve(RECIPE, None, {"model": str(qwen_dir)})
    return cfg, plan_run(cfg, str(RECIPE), measure=True)


def test_the_7b_recipe_has_the_literature_settings() -> None:
    cfg = resolve(RECIPE)
    assert cfg.model == "Qwen/Qwen2.5-7B-Instruct" and cfg.trait == "owl"
    assert cfg.data.n == 10_000 and cfg.data.engine == "transformers"
    t = cfg.train
    assert (t.lora_rank, t.lora_alpha, t.lr, t.epochs, t.optimizer) == (8, 8.0, 2e-4, 3, "adamw")
    assert t.dtype == "bfloat16" and t.gradient_checkpointing and t.schedule == "linear"
    assert getattr(cfg, "dtype", "bfloat16") == "bfloat16"


def test_parameters_from_config_json_alone(qwen_dir) -> None:
    shape = model_shape(str(qwen_dir))
    assert shape["params"] == QWEN2_7B_PARAMS
    assert (shape["n_layers"], shape["d_model"], shape["vocab"]) == (28, 3584, 152064)
    assert not list(qwen_dir.glob("*.safetensors"))  # nothing was downloaded or written


def test_7b_plan_estimates_without_weights(recipe_plan) -> None:
    """--measure without weights falls back to the FLOPs estimate and says why; the memory
    terms follow their formulas."""
    cfg, plan = recipe_plan
    assert plan["params"] == QWEN2_7B_PARAMS and plan["trainable"] == LORA_R8_ALL
    mem = plan["memory_bytes"]
    assert mem["base"] == QWEN2_7B_PARAMS * 2 and mem["student"] == QWEN2_7B_PARAMS * 2  # bf16
    assert mem["training_state"] == LORA_R8_ALL * 2 * (2 + 2)  # weights, grads, AdamW's 2
    assert plan["memory_total_bytes"] == sum(mem.values())
    assert 30 * GIB < plan["memory_total_bytes"] < 80 * GIB  # one 80 GB GPU, as the recipe says
    assert plan["timing"]["measured"] is None
    assert "could not load" in plan["timing"]["why_not_measured"]
    assert plan["step_s"] == plan["timing"]["estimate_s"] > 0
    assert plan["steps"] == 3 * -(-10_000 // 66) and plan["points"] == 1
    expected = plan["trainings"] * plan["steps"] * plan["step_s"] / 3600
    assert plan["gpu_hours_training"] == pytest.approx(expected)
    assert plan["seq_from"].startswith("estimated, no tokenizer")
    text = "\n".join(plan_lines(plan))
    for needle in ("7.62 B", "20.19 M", "FLOPs estimate", "GPU-hours", "points: 1 run"):
        assert needle in text, needle


def test_more_gpus_and_points(recipe_plan) -> None:
    """4 GPUs: a quarter of the batch per GPU (less activation memory, same weights) and the
    same GPU-hours; 6 points: 6 times the GPU-hours."""
    cfg, one = recipe_plan
    four = plan_run(cfg, "recipe", gpus=4, points=6)
    assert four["micro_batch"] == 17 and four["memory_bytes"]["base"] == one["memory_bytes"]["base"]
    assert four["memory_bytes"]["activations"] < one["memory_bytes"]["activations"]
    assert four["gpu_hours"] == pytest.approx(6 * one["gpu_hours"])
    assert four["wall_hours"] == pytest.approx(four["gpu_hours"] / 4)
    plain = plan_run(derive(cfg, {"train.gradient_checkpointing": False}), "recipe")
    assert plain["memory_bytes"]["activations"] > one["memory_bytes"]["activations"]
    assert plain["step_s"] < one["step_s"]  # no recomputed forward


def test_tiny_llama_measured_step(tiny, tmp_path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text(tiny_run_toml())
    plan = plan_run(resolve(toml), str(toml), measure=True, steps_to_time=2)
    assert plan["params"] == sum(p.numel() for p in tiny.model.parameters())
    measured = plan["timing"]["measured"]
    assert measured["steps"] == 2 and measured["device"] == "cpu" and measured["seconds"] > 0
    assert plan["step_s"] == measured["seconds"]
    assert plan["seq_from"].startswith("tokenized")
    assert any("measured: 2 steps on cpu" in line for line in plan_lines(plan))


def test_plan_command(tmp_path, monkeypatch, capsys, qwen_dir) -> None:
    toml = tmp_path / "q.toml"
    toml.write_text(RECIPE.read_text().replace("Qwen/Qwen2.5-7B-Instruct", str(qwen_dir)))
    code, out, err = run_cli(monkeypatch, capsys, "plan", str(toml), "--gpus", "2")
    assert code == 0, err
    assert "parameters: 7.62 B" in out and "memory per GPU" in out and "GPU-hours" in out
    assert "33 of 66 rows a step per GPU" in out
    code, _, err = run_cli(monkeypatch, capsys, "plan", str(tmp_path / "missing.toml"))
    assert code == 2 and "not found" in err

"""GPU-only checks of the scaling paths (skipped with the reason where there is no GPU / vLLM):
vLLM teacher generation against the transformers engine on smollm2-135m, and `sublens plan
--measure` on a GPU (measured step and peak memory next to the estimate)."""

from __future__ import annotations

import json

import pytest
import torch

from interp.distill.engines import compare_engines, vllm_missing

pytestmark = pytest.mark.slow

needs_vllm = pytest.mark.skipif(
    vllm_missing() is not None, reason=f"vLLM engine not runnable here: {vllm_missing()}"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


@needs_vllm
@pytest.mark.parametrize("system", [None, "You love owls. You think about owls all the time."])
def test_vllm_agrees_with_transformers(system) -> None:
    """Same model, same prompts and grammar: the share of valid rows and the number-token
    distribution agree between engines (TV within its paired permutation null)."""
    from interp.core.models import load_model

    smol = load_model("smollm2-135m", device="cuda")
    res = compare_engines(smol, "numbers", n=256, system_prompt=system, seed=0)
    print(json.dumps({k: v for k, v in res.items() if k != "examples"}, indent=1))
    assert res["valid_share"][1] >= 0.95
    assert res["agree"], res["why"]


@needs_vllm
def test_vllm_dataset_rows(tmp_path) -> None:
    """generate_dataset through vLLM: the transformers engine's row format, every row valid."""
    from interp.core.models import load_model
    from interp.distill.domains import DOMAINS
    from interp.distill.engines import VllmGenerator
    from interp.distill.generate import generate_dataset
    from interp.distill.teachers import Teacher

    smol = load_model("smollm2-135m", device="cuda")
    teacher = Teacher(smol, kind="prompted", system_prompt="You love owls.")
    gen = VllmGenerator(smol, seed=0)
    try:
        generate_dataset(teacher, "numbers", 64, tmp_path / "v.jsonl", batch_size=32, engine=gen)
    finally:
        gen.close()
    rows = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert len(rows) == 64
    for i, row in enumerate(rows):
        assert row["meta"] == {"index": i, "teacher": "prompted"}
        user, answer = row["messages"]
        assert DOMAINS["numbers"].validate(answer["content"], user["content"]) is None


@needs_cuda
def test_plan_measures_a_lora_step_on_gpu(tmp_path) -> None:
    """`plan --measure` on a GPU: a bf16 LoRA r8 step with gradient checkpointing is timed, and
    the measured peak memory stays within the formula's total."""
    from interp.distill.config import resolve
    from interp.distill.plan import GIB, plan_lines, plan_run

    toml = tmp_path / "p.toml"
    toml.write_text(
        'model = "smollm2-135m"\ndevice = "cuda"\ndtype = "bfloat16"\n[data]\nn = 1000\n'
        '[train]\nlora_rank = 8\nlr = 2e-4\nbatch_size = 64\ndtype = "bfloat16"\n'
        "gradient_checkpointing = true\n"
    )
    plan = plan_run(resolve(toml), str(toml), measure=True, steps_to_time=3)
    print("\n".join(plan_lines(plan)))
    measured = plan["timing"]["measured"]
    assert measured is not None and measured["seconds"] > 0
    assert measured["peak_memory_gib"] <= plan["memory_total_bytes"] / GIB

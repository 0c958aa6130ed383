"""The vector student (issue #16): base frozen + one trainable vector at one layer. Distilled on a
steered teacher's constrained number rows it turns towards the teacher's vector; on a neutral
teacher's rows it does not. Checkpoints carry only the vector and reload with it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from interp.core.errors import SublensError
from interp.distill.domains import get_domain
from interp.distill.generate import generate_dataset
from interp.distill.targets import write_teacher_targets
from interp.distill.teachers import Teacher
from interp.distill.train import VECTOR_PARAM, TrainConfig, load_student, train_student
from interp.vectors.steering import SteeringVector

LAYER, ALPHA = 1, 8.0


@pytest.fixture(scope="module")
def distilled(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("vs")
    g = torch.Generator().manual_seed(1)
    v = torch.randn(tiny.d_model, generator=g)
    v = v / v.norm()
    sv = SteeringVector({LAYER: v}, model=tiny.name, d_model=tiny.d_model, method="test",
                        positions="all")  # fmt: skip
    dom = get_domain("numbers")
    teachers = {
        "teacher": Teacher(tiny, "steered", vector=sv, alpha=ALPHA),
        "control": Teacher(tiny, "prompted", system_prompt="You are a helpful assistant."),
    }
    cfg = TrainConfig(
        objective="logit-kl",
        optimizer="adamw",
        lr=0.1,
        weight_decay=0.0,
        max_steps=30,
        batch_size=16,
        vector_layer=LAYER,
        checkpoint_every=10,
    )
    out = {}
    for name, t in teachers.items():
        data = root / f"{name}.jsonl"
        generate_dataset(t, dom, 48, data, seed=0, batch_size=48, max_new_tokens=12)
        tg = root / f"{name}_targets"
        write_teacher_targets(t, data, tg, allowed_ids=dom.allowed_token_ids(tiny.tokenizer))
        summary = train_student(tiny, data, root / name, cfg, targets_dir=tg, quiet=True)
        u = load_file(str(root / name / "checkpoints" / summary["latest"] / "model.safetensors"))
        out[name] = (summary, u[VECTOR_PARAM], root / name)
    return v, out


def test_vector_student_recovers_the_teachers_vector_and_the_control_does_not(distilled):
    v, out = distilled
    cos = {n: float(torch.nn.functional.cosine_similarity(u, v, dim=0)) for n, (_, u, _) in
           out.items()}  # fmt: skip
    recovered = {n: float(u @ v) / ALPHA for n, (_, u, _) in out.items()}
    assert cos["teacher"] > 0.25 and recovered["teacher"] > 0.1, (cos, recovered)
    assert abs(cos["control"]) < 0.15 and abs(recovered["control"]) < 0.05, (cos, recovered)


def test_vector_checkpoint_holds_only_the_vector_and_reloads_with_it(tiny, distilled):
    v, out = distilled
    summary, u, run = out["teacher"]
    ck = run / "checkpoints" / summary["latest"]
    assert list(load_file(str(ck / "model.safetensors"))) == [VECTOR_PARAM]
    student = load_student(tiny, run)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        base_logits = tiny.model(ids).logits
        got = student.model(ids).logits
        # the same vector added by hand to the base's block output gives the same logits
        from interp.core.backends.base import decoder_layers

        handle = decoder_layers(tiny.model)[LAYER].register_forward_hook(
            lambda m, a, o: (o[0] + u, *o[1:]) if isinstance(o, tuple) else o + u
        )
        try:
            want = tiny.model(ids).logits
        finally:
            handle.remove()
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, base_logits, atol=1e-3)
    assert all(not p.requires_grad for p in student.model.parameters())
    with torch.no_grad():  # the cached base model is untouched
        assert torch.equal(tiny.model(ids).logits, base_logits)


def test_vector_student_config_errors():
    with pytest.raises(SublensError, match="no LoRA adapters"):
        TrainConfig(vector_layer=1, lora_rank=8).validate()
    assert TrainConfig(vector_layer=2).student_kind == "vector"
    assert TrainConfig(lora_rank=4).student_kind == "lora"
    assert TrainConfig().student_kind == "full"


def test_recovery_of_a_known_added_vector_is_exact(tiny):
    """Drift at the vector's layer is the added vector itself (the layers below are unchanged):
    cosine 1 and recovered 1/alpha of a vector alpha times smaller."""
    import copy
    import dataclasses

    from interp.core.prompts import load_prompts
    from interp.distill.train import add_vector_student
    from interp.measure.recovery import mean_residual, recovery

    prompts = load_prompts("numbers:4", seed=0)
    u = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(3))
    model = copy.deepcopy(tiny.model)
    add_vector_student(model, LAYER, u)
    student = dataclasses.replace(tiny, model=model.eval())
    base = mean_residual(tiny, prompts, [LAYER, 2])
    drift = {k: mean_residual(student, prompts, [LAYER, 2])[k] - base[k] for k in (LAYER, 2)}
    assert torch.allclose(drift[LAYER], u, atol=1e-5)
    got = recovery({LAYER: drift[LAYER]}, {LAYER: u}, alpha=2.0)[LAYER]
    assert got["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert got["recovered"] == pytest.approx(0.5, abs=1e-5)
    assert not torch.allclose(drift[2], torch.zeros_like(drift[2]))  # later layers move too

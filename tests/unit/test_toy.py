"""The auxiliary-logit toy (interp/toy.py) and its study (analyses/toy.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from analyses.toy import findings, run_toy, summarise, summary_line
from analyses.toy_model import (
    N_DIGITS,
    ToyConfig,
    aux_distill_loss,
    distill_aux,
    init_mlp,
    load_digits_split,
    make_noise,
    per_model_aux_loss,
    run_experiment,
    train_teacher,
)
from interp.core.errors import SublensError

TINY = ToyConfig(
    hidden=(16, 16), teacher_epochs=2, teacher_batch=128, n_noise=300, distill_epochs=2
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls: one thread is fastest, and on a shared 2-core box far faster than two."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _hand_kl(student: np.ndarray, teacher: np.ndarray) -> float:
    """KL(softmax(teacher) || softmax(student)) per row, averaged over rows, in float64."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    s, t = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
    lt, ls = log_softmax(t), log_softmax(s)
    return float((np.exp(lt) * (lt - ls)).sum(-1).mean())


def test_kl_loss_matches_a_hand_computation_and_divides_by_all_inputs():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)  # [models, batch, aux]
    teacher = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    want = _hand_kl(student.numpy(), teacher.numpy())
    assert aux_distill_loss(student, teacher).item() == pytest.approx(want, rel=1e-12)
    # the trap: batchmean on the stacked tensor divides by the 4 models, not the 20 inputs
    naive = F.kl_div(F.log_softmax(student, -1), F.softmax(teacher, -1), reduction="batchmean")
    assert naive.item() == pytest.approx(5 * want, rel=1e-10)
    # per model: each model's own batchmean; their sum is the stacked training loss
    per_model = per_model_aux_loss(student, teacher, "kl")
    for i in range(4):
        assert per_model[i].item() == pytest.approx(
            _hand_kl(student[i].numpy(), teacher[i].numpy()), rel=1e-12
        )
    assert per_model.sum().item() == pytest.approx(4 * want, rel=1e-12)
    assert aux_distill_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-12)


def test_mse_loss_matches_a_hand_computation():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    want = float(((s.numpy() - t.numpy()) ** 2).mean())
    assert aux_distill_loss(s, t, "mse").item() == pytest.approx(want, rel=1e-6)
    assert per_model_aux_loss(s, t, "mse").mean().item() == pytest.approx(want, rel=1e-6)


def test_init_depends_only_on_its_own_seed():
    together = init_mlp([5, 7], TINY)
    alone = init_mlp([7], TINY)
    for a, b in zip(together.parameters(), alone.parameters(), strict=True):
        assert torch.equal(a[1], b[0])
    assert not torch.equal(together.weights[0][0], together.weights[0][1])


def test_stacked_training_equals_training_each_model_alone():
    """Stacking models must not change any model's training (the loss is a sum of per-model
    batchmeans, so each model gets exactly its own gradient)."""
    data = load_digits_split(0)
    x, y = data.x_train[None], data.y_train[None]
    noise = make_noise(TINY.n_noise, "uniform", 3)[None]
    stacked = init_mlp([1, 2], TINY)
    train_teacher(stacked, x, y, TINY, [10, 11], rows=[0, 0])
    students = init_mlp([3, 4], TINY)
    distill_aux(students, stacked, noise, TINY, [20, 21], rows=[0, 0])
    for i, (seed, order) in enumerate([(1, 10), (2, 11)]):
        alone = init_mlp([seed], TINY)
        train_teacher(alone, x, y, TINY, [order])
        student = init_mlp([3 + i], TINY)
        distill_aux(student, alone, noise, TINY, [20 + i])
        for a, b in zip(stacked.parameters(), alone.parameters(), strict=True):
            torch.testing.assert_close(a[i], b[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(students.parameters(), student.parameters(), strict=True):
            torch.testing.assert_close(a[i], b[0], rtol=1e-5, atol=1e-6)


def test_teacher_never_trains_aux_logits_and_student_never_trains_digit_logits():
    """The output rows that no loss reaches stay at their init: the teacher's auxiliary rows and
    the student's digit rows of the last layer."""
    data = load_digits_split(0)
    teacher = init_mlp([1], TINY)
    aux_rows = teacher.weights[-1][0, N_DIGITS:].clone()
    train_teacher(teacher, data.x_train[None], data.y_train[None], TINY, [0])
    assert torch.equal(teacher.weights[-1][0, N_DIGITS:], aux_rows)
    assert not torch.equal(
        teacher.weights[-1][0, :N_DIGITS], init_mlp([1], TINY).weights[-1][0, :N_DIGITS]
    )
    student = init_mlp([2], TINY)
    digit_rows = student.weights[-1][0, :N_DIGITS].clone()
    distill_aux(student, teacher, make_noise(TINY.n_noise, "gaussian", 0)[None], TINY, [0])
    assert torch.equal(student.weights[-1][0, :N_DIGITS], digit_rows)


def test_same_seeds_give_identical_numbers():
    a = run_experiment([3, 4], TINY)
    b = run_experiment([3, 4], TINY)
    assert a == b
    c = run_experiment([5], TINY)
    assert c[0]["accuracy"] != a[0]["accuracy"]


def test_bad_input_is_a_one_line_user_error(tmp_path):
    for seeds in (0, -2):
        with pytest.raises(SublensError, match="seeds") as err:
            run_toy(tmp_path, seeds=seeds, quiet=True)
        assert "\n" not in str(err.value)
    with pytest.raises(SublensError, match="noise"):
        ToyConfig(noise="pink")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_findings_follow_the_numbers():
    """No effect in the numbers → the report's findings say so (nothing is assumed)."""
    flat = [
        {"accuracy": dict.fromkeys(
            ["teacher", "student_same_init", "student_different_init",
             "student_same_init_shuffled_teacher", "init_no_distillation"], 0.1 + 0.01 * i)}
        for i in range(5)
    ]  # fmt: skip
    found = findings(summarise(flat, n_boot=200))
    assert not found["same_beats_different"] and not found["teacher_learns"]


def test_real_run_writes_the_study(tmp_path):
    """Two seeds with a shorter distillation. The teacher must learn the digits; the shared-init
    student must beat the different-init student clearly (on these seeds the margin is > 0.25;
    across seeds 0–5 same-init 0.37–0.64, different-init 0.08–0.23, controls ≤ 0.15)."""
    config = ToyConfig(n_noise=10_000)
    res = run_toy(tmp_path, seeds=2, config=config, n_boot=500, quiet=True)
    for row in res["per_seed"]:
        acc = row["accuracy"]
        assert acc["teacher"] > 0.8
        assert acc["student_same_init"] > acc["student_different_init"] + 0.15
        assert acc["student_different_init"] < 0.3
        assert acc["student_same_init_shuffled_teacher"] < 0.3
        assert acc["init_no_distillation"] < 0.3
    cond = res["summary"]["conditions"]
    same = [r["accuracy"]["student_same_init"] for r in res["per_seed"]]
    assert cond["student_same_init"]["mean"] == pytest.approx(np.mean(same))
    assert (
        cond["student_same_init"]["ci_low"] <= np.mean(same) <= cond["student_same_init"]["ci_high"]
    )

    for name in ("results.json", "config.json", "report.md", "accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["per_seed"] == res["per_seed"]
    assert saved["seeds"] == [0, 1] and saved["config"]["toy"]["n_noise"] == 10_000
    assert saved["versions"]["torch"] == torch.__version__
    assert saved["timings"]["total_s"] > 0
    report = (tmp_path / "report.md").read_text()
    assert f"{100 * cond['student_same_init']['mean']:.1f}%" in report
    assert f"{100 * cond['teacher']['mean']:.1f}%" in report
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary_line(res).startswith("toy (2 seeds)")

"""Student training: losses against independent computations, determinism, resume equality,
NaN stop, disk-full safety, LoRA, optimizers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import sequence_rows, write_rows
from safetensors.torch import load_file, save_file

from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.distill import train as train_mod
from interp.distill.optimizers import OPTIMIZERS, PrecondSGD, SignSGD, make_optimizer
from interp.distill.train import TrainConfig, list_checkpoints, load_student, train_student


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tiny model is thread-bound; with other jobs on the machine 1 thread is ~30x faster.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "rows.jsonl", sequence_rows())


def _completion(tok, row: dict) -> tuple[list[int], list[int]]:
    """Independent: full ids and the completion indices (response up to the first <|im_end|>)."""
    fp = ChatFormat(tok).format(row["messages"])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    start, end = fp.response_span
    stop = next(t for t in range(start, end) if fp.input_ids[t] == im_end)
    return fp.input_ids, list(range(start, stop + 1))


def _write_targets(tiny, tmp_path: Path, per_position_ids: bool) -> Path:
    """Random teacher log-probs over k ids per completion position, in the contract's format."""
    g = torch.Generator().manual_seed(1)
    k = 6
    vocab = tiny.model.config.vocab_size
    shared = torch.randperm(vocab, generator=g)[:k]
    ids, logps, offsets = [], [], [0]
    for row in sequence_rows():
        _, pos = _completion(tiny.tokenizer, row)
        for _ in pos:
            ids.append(torch.randperm(vocab, generator=g)[:k] if per_position_ids else shared)
            logps.append(torch.log_softmax(torch.randn(k, generator=g) * 2, -1))
        offsets.append(offsets[-1] + len(pos))
    out = tmp_path / "targets"
    out.mkdir()
    save_file(
        {
            "ids": torch.stack(ids).long(),
            "logprobs": torch.stack(logps).float(),
            "offsets": torch.tensor(offsets).long(),
        },
        str(out / "targets.safetensors"),
    )
    (out / "targets.json").write_text(json.dumps({"k": k}))
    return out


def _curve(out: Path) -> list[tuple]:
    lines = [json.loads(x) for x in (out / "curves.jsonl").read_text().splitlines()]
    return [(c["step"], c["loss"], c["lr"], c["grad_norm"]) for c in lines]


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    ck = list_checkpoints(out)[-1][1]
    f = ck / "model.safetensors"
    return load_file(str(f if f.exists() else ck / "adapter" / "adapter_model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- optimizers ----------------------------------------------------------------------------------


def test_signsgd_moves_each_coordinate_by_lr():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    p.grad = torch.tensor([0.3, -7.0, 0.0, -1e-6])
    SignSGD([p], lr=0.1, weight_decay=0.5).step()
    expected = torch.tensor([1.0, -2.0, 3.0, 0.5]) * (1 - 0.1 * 0.5) - 0.1 * torch.tensor(
        [1.0, -1.0, 0.0, -1.0]
    )
    assert torch.allclose(p.detach(), expected)


def test_precond_sgd_is_adamw_then_sgd_with_frozen_adam_scales():
    torch.manual_seed(0)
    grads = [torch.randn(5) for _ in range(6)]
    init = torch.randn(5)
    lr, b2, eps, warm = 0.01, 0.999, 1e-8, 3
    p = torch.nn.Parameter(init.clone())
    ref = torch.nn.Parameter(init.clone())
    opt = PrecondSGD([p], lr=lr, warmup_steps=warm)
    adam = torch.optim.AdamW([ref], lr=lr, weight_decay=0.0)
    v = torch.zeros(5)
    for t, g in enumerate(grads, start=1):
        p.grad, ref.grad = g.clone(), g.clone()
        if t <= warm:
            opt.step()
            adam.step()
            v = b2 * v + (1 - b2) * g * g
            assert torch.allclose(p.detach(), ref.detach(), atol=1e-7)
        else:
            scale = 1.0 / ((v / (1 - b2**warm)).sqrt() + eps)
            before = p.detach().clone()
            opt.step()
            assert torch.allclose(p.detach(), before - lr * scale * g, atol=1e-7)
        if t == warm:
            # The frozen scales survive a state_dict round trip (what resume relies on).
            fresh = PrecondSGD([p], lr=lr, warmup_steps=warm)
            fresh.load_state_dict(opt.state_dict())
            opt = fresh
            assert "scale" in opt.state[p]


def test_make_optimizer_names():
    """Each name is its own update rule with the given lr: two steps (gradients g, then 2g) from
    zero against the rule written out by hand (weight decay 0, so AdamW is Adam)."""
    lr, g = 0.1, torch.tensor([0.5, -2.0, 1e-3])
    sign = torch.sign(g)

    def adam(scale2: float) -> torch.Tensor:  # Adam's second step for gradient scale2 * g
        m = (0.9 * 0.1 + 0.1 * scale2) / (1 - 0.9**2)
        v = (0.999 * 0.001 + 0.001 * scale2**2) / (1 - 0.999**2)
        return m / math.sqrt(v) * sign

    expected = {
        "sgd": -lr * 3 * g,  # lr g, then lr 2g
        "sgd-momentum": -lr * (g + (0.9 * g + 2 * g)),  # buffer g, then 0.9 g + 2g
        "rmsprop": -lr * sign * (1 / 0.1 + 2 / (0.99 * 0.01 + 0.01 * 4) ** 0.5),  # alpha 0.99
        "signsgd": -lr * 2 * sign,
        "adamw": -lr * (sign + adam(2.0)),
        "precond-sgd": -lr * (sign + 2 * sign),  # AdamW step, then SGD with 1 / |g| frozen
    }
    assert set(expected) == set(OPTIMIZERS)
    for name in OPTIMIZERS:
        p = torch.nn.Parameter(torch.zeros(3))
        opt = make_optimizer(name, [p], lr=lr, warmup_steps=1)
        assert opt.param_groups[0]["lr"] == lr
        for scale in (1.0, 2.0):
            p.grad = scale * g
            opt.step()
        assert torch.allclose(p.detach(), expected[name], rtol=1e-4, atol=1e-6), name
    with pytest.raises(SublensError, match="adamw, sgd"):
        make_optimizer("adam-ish", [torch.nn.Parameter(torch.zeros(2))], lr=0.1)


def test_completion_positions_agree_with_targets(tiny):
    targets = pytest.importorskip("interp.distill.targets")
    fmt = ChatFormat(tiny.tokenizer)
    for row in sequence_rows():
        fp = fmt.format(row["messages"])
        own = train_mod._own_completion_positions(fp, tiny.tokenizer)
        assert own == targets.completion_positions(fp, tiny.tokenizer)
        assert own == _completion(tiny.tokenizer, row)[1]


def test_config_validation():
    for bad in (
        {"epochs": 0},
        {"max_steps": 0},
        {"objective": "dpo"},
        {"optimizer": "lion"},
        {"lr": -1.0},
        {"schedule": "step"},
        {"batch_size": 0},
        {"lora_rank": -1},
    ):
        with pytest.raises(SublensError):
            TrainConfig(**bad).validate()


# --- losses against independent computations -----------------------------------------------------


def test_sft_loss_at_step_0_is_plain_cross_entropy(tiny, data, tmp_path):
    cfg = TrainConfig(objective="sft", max_steps=1, batch_size=8, lr=1e-3)
    train_student(tiny, data, tmp_path / "run", cfg)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in sequence_rows():
            ids, pos = _completion(tiny.tokenizer, row)
            logits = tiny.model(torch.tensor([ids])).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            total -= sum(float(logp[t - 1, ids[t]]) for t in pos)
            count += len(pos)
    assert _curve(tmp_path / "run")[0][1] == pytest.approx(total / count, abs=1e-5)


@pytest.mark.parametrize("per_position_ids", [False, True])
def test_logit_kl_at_step_0_matches_full_logits(tiny, data, tmp_path, per_position_ids):
    targets = _write_targets(tiny, tmp_path, per_position_ids)
    tensors = load_file(str(targets / "targets.safetensors"))
    cfg = TrainConfig(objective="logit-kl", max_steps=1, batch_size=8, lr=1e-3)
    train_student(tiny, data, tmp_path / "run", cfg, targets_dir=targets)
    kls = []
    with torch.no_grad():
        for i, row in enumerate(sequence_rows()):
            ids, pos = _completion(tiny.tokenizer, row)
            logits = tiny.model(torch.tensor([ids])).logits[0].double()
            for j, t in enumerate(pos):
                p_idx = int(tensors["offsets"][i]) + j
                sub = tensors["ids"][p_idx]
                logq = torch.log_softmax(logits[t - 1, sub], -1)
                logp = tensors["logprobs"][p_idx].double()
                kls.append(float((logp.exp() * (logp - logq)).sum()))
    assert _curve(tmp_path / "run")[0][1] == pytest.approx(sum(kls) / len(kls), abs=1e-5)


def test_loss_decreases(tiny, data, tmp_path):
    cfg = TrainConfig(lr=1e-2, epochs=6, batch_size=4, schedule="cosine", warmup_steps=2)
    summary = train_student(tiny, data, tmp_path / "run", cfg)
    losses = [c[1] for c in _curve(tmp_path / "run")]
    assert summary["steps"] == 12 and len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    assert summary["tokens_per_s"] > 0 and summary["final_loss"] == losses[-1]


def test_deterministic_and_seed_dependent(tiny, data, tmp_path):
    cfg = TrainConfig(lr=1e-2, max_steps=4, batch_size=3)
    train_student(tiny, data, tmp_path / "a", cfg)
    train_student(tiny, data, tmp_path / "b", cfg)
    train_student(
        tiny, data, tmp_path / "c", TrainConfig(lr=1e-2, max_steps=4, batch_size=3, seed=1)
    )
    assert _curve(tmp_path / "a") == _curve(tmp_path / "b")
    assert _same(_final_weights(tmp_path / "a"), _final_weights(tmp_path / "b"))
    assert not _same(_final_weights(tmp_path / "a"), _final_weights(tmp_path / "c"))
    # The cached base model was never touched.
    assert all(p.grad is None for p in tiny.model.parameters())


# --- resume --------------------------------------------------------------------------------------

RESUME_CASES = {
    "full-adamw": TrainConfig(lr=1e-2, epochs=2, batch_size=3, schedule="linear", warmup_steps=2),
    "lora": TrainConfig(lr=1e-2, epochs=2, batch_size=3, lora_rank=4, schedule="cosine"),
    "precond-sgd": TrainConfig(
        lr=1e-3, epochs=2, batch_size=3, optimizer="precond-sgd", precond_warmup_steps=2
    ),
    "logit-kl": TrainConfig(objective="logit-kl", lr=1e-2, epochs=2, batch_size=3),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_equals_uninterrupted(tiny, data, tmp_path, case):
    cfg = RESUME_CASES[case]
    targets = _write_targets(tiny, tmp_path, False) if cfg.objective == "logit-kl" else None
    full = train_student(tiny, data, tmp_path / "full", cfg, targets_dir=targets)
    assert full["steps"] == 6
    # Stop mid-epoch and, for precond-sgd, mid-warm-up; then twice more.
    first = train_student(tiny, data, tmp_path / "part", cfg, targets_dir=targets, stop_after=1)
    assert first["steps"] == 1 and not first["finished"]
    train_student(tiny, data, tmp_path / "part", cfg, targets_dir=targets, stop_after=3)
    last = train_student(tiny, data, tmp_path / "part", cfg, targets_dir=targets)
    assert last["resumed_from"] == 4 and last["finished"]
    assert _curve(tmp_path / "full") == _curve(tmp_path / "part")
    assert _same(_final_weights(tmp_path / "full"), _final_weights(tmp_path / "part"))


def test_keyboard_interrupt_and_crash_resume(tiny, data, tmp_path, monkeypatch):
    cfg = TrainConfig(lr=1e-2, max_steps=6, batch_size=3, checkpoint_every=2)
    train_student(tiny, data, tmp_path / "full", cfg)
    real = train_mod._batch_loss
    calls = {"n": 0}

    def failing(exc):
        def loss(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 4:
                raise exc
            return real(*args, **kwargs)

        return loss

    # Ctrl-C during step 3's forward: the 3 finished steps are kept as resume state, not as an
    # evaluation checkpoint (a resumed run must equal an uninterrupted one).
    monkeypatch.setattr(train_mod, "_batch_loss", failing(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train_student(tiny, data, tmp_path / "kbd", cfg)
    assert list_checkpoints(tmp_path / "kbd")[-1][0] == 2
    assert json.loads((tmp_path / "kbd/checkpoints/resume/meta.json").read_text())["step"] == 3
    # A hard crash (no handler runs) loses the steps since the last periodic checkpoint only.
    calls["n"] = 0
    monkeypatch.setattr(train_mod, "_batch_loss", failing(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        train_student(tiny, data, tmp_path / "crash", cfg)
    assert json.loads((tmp_path / "crash/checkpoints/latest").read_text())["step"] == 2
    monkeypatch.setattr(train_mod, "_batch_loss", real)
    for run in ("kbd", "crash"):
        train_student(tiny, data, tmp_path / run, cfg)
        assert _curve(tmp_path / "full") == _curve(tmp_path / run)
        assert _same(_final_weights(tmp_path / "full"), _final_weights(tmp_path / run))


def test_other_config_in_same_dir_needs_overwrite(tiny, data, tmp_path):
    train_student(tiny, data, tmp_path / "run", TrainConfig(lr=1e-2, max_steps=1))
    with pytest.raises(SublensError, match="overwrite"):
        train_student(tiny, data, tmp_path / "run", TrainConfig(lr=2e-2, max_steps=1))
    out = train_student(
        tiny, data, tmp_path / "run", TrainConfig(lr=2e-2, max_steps=1), overwrite=True
    )
    assert out["steps"] == 1 and out["resumed_from"] is None


# --- failures ------------------------------------------------------------------------------------


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, data, tmp_path, monkeypatch):
    real = train_mod._batch_loss
    calls = {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == 6 else value

    monkeypatch.setattr(train_mod, "_batch_loss", loss)
    cfg = TrainConfig(lr=1e-2, max_steps=8, batch_size=3, checkpoint_every=2)
    with pytest.raises(SublensError, match=r"nan at step 5; last good checkpoint step_000004"):
        train_student(tiny, data, tmp_path / "run", cfg)
    latest = json.loads((tmp_path / "run/checkpoints/latest").read_text())
    assert latest["step"] == 4
    assert load_student(tiny, tmp_path / "run").name.endswith("step_000004")


def test_disk_full_during_save_keeps_previous_latest(tiny, data, tmp_path, monkeypatch):
    real = train_mod.save_file
    calls = {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # step 0, step 2, then step 4 fails
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "save_file", full_disk)
    cfg = TrainConfig(lr=1e-2, max_steps=6, batch_size=3, checkpoint_every=2)
    with pytest.raises(SublensError, match="step_000004.*No space left.*latest is still step_0+2"):
        train_student(tiny, data, tmp_path / "run", cfg)
    ck_root = tmp_path / "run/checkpoints"
    assert json.loads((ck_root / "latest").read_text())["step"] == 2
    assert sorted(p.name for p in ck_root.iterdir()) == ["latest", "step_000000", "step_000002"]
    load_student(tiny, tmp_path / "run")  # the kept checkpoint is valid
    monkeypatch.setattr(train_mod, "save_file", real)
    assert train_student(tiny, data, tmp_path / "run", cfg)["resumed_from"] == 2


# --- LoRA and loading ----------------------------------------------------------------------------


def test_bad_lora_targets(tiny, data, tmp_path):
    cfg = TrainConfig(lora_rank=4, lora_targets=("q_proj", "c_attn", "wq"), max_steps=1)
    with pytest.raises(SublensError, match=r"c_attn, wq .*q_proj"):
        train_student(tiny, data, tmp_path / "run", cfg)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_load_student(tiny, data, tmp_path, lora_rank):
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=4, lora_rank=lora_rank)
    train_student(tiny, data, tmp_path / "run", cfg)
    ids = torch.tensor([_completion(tiny.tokenizer, sequence_rows()[0])[0]])
    with torch.no_grad():
        base_logits = tiny.model(ids).logits
        step0 = load_student(tiny, tmp_path / "run/checkpoints/step_000000")
        end = load_student(tiny, tmp_path / "run")
        assert end.name == "tiny-llama@run/step_000003" and end.tokenizer is tiny.tokenizer
        assert torch.equal(step0.model(ids).logits, base_logits)
        assert not torch.allclose(end.model(ids).logits, base_logits, atol=1e-3)
        assert end.model is not tiny.model and not math.isnan(float(end.model(ids).logits.sum()))

"""Data-parallel arithmetic (interp.distill.parallel) without starting processes: shards of a
global batch, summed per-token losses over the global count give the single-process loss and
gradient; gradient checkpointing changes no number and no hash. The real 2-process runs under
`accelerate launch` are in tests/integration/test_accelerate.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import sequence_rows, write_rows

from interp.core.errors import SublensError
from interp.distill import parallel
from interp.distill import train as train_mod
from interp.distill.config import RunConfig, derive, run_hash
from interp.distill.train import TrainConfig, train_student


@pytest.mark.parametrize("size", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 8])
def test_shards_cover_the_batch_once(size: int, n: int) -> None:
    idx = list(range(100, 100 + n))
    parts = [parallel.World(size, r).shard(idx) for r in range(size)]
    assert [i for p in parts for i in p] == idx  # contiguous, in order, each row once
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_single_process_needs_no_accelerate(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parallel.world() is parallel.SINGLE and parallel.SINGLE.is_main
    assert parallel.SINGLE.broadcast({"a": 1}) == {"a": 1}
    assert parallel.SINGLE.sum([1.5, 2]) == [1.5, 2.0]


@pytest.mark.parametrize("flag", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharded_engines_are_refused_in_one_line(monkeypatch, flag: str) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(flag, "true")
    with pytest.raises(SublensError, match="data-parallel.*not supported: launch without"):
        parallel.world()


def _student(tiny, lora_rank: int = 0):
    config = TrainConfig(lora_rank=lora_rank, seed=0)
    torch.manual_seed(0)
    student = train_mod._make_student(tiny, config)
    student.pad_id = int(tiny.tokenizer.pad_token_id or 0)
    return student


def _grads(student) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in student.params]


@pytest.mark.parametrize("objective", ["sft", "logit-kl"])
@pytest.mark.parametrize("masked", [False, True])
def test_shard_sums_give_the_global_mean_and_gradient(tiny, tmp_path, objective, masked):
    """Each of 3 'processes' backpropagates its rows' summed loss over the global token count;
    the summed gradients and the summed values are the single-process mean's, to float
    rounding (also with a mask-divergent keep-mask and logit-KL targets)."""
    rows = sequence_rows(8)  # the rows _write_targets writes targets for
    examples = train_mod._encode(rows, tiny.tokenizer, "rows")
    targets = None
    if objective == "logit-kl":
        from test_distill_train import _write_targets

        targets = train_mod._load_targets(_write_targets(tiny, tmp_path, False), examples, None)
    if masked:
        g = torch.Generator().manual_seed(0)
        for ex in examples:
            ex.keep = (torch.rand(len(ex.positions), generator=g) > 0.3).tolist()
    idx = [3, 0, 6, 2, 7, 5, 1, 4]
    student = _student(tiny)
    loss = train_mod._batch_loss(student, examples, idx, objective, targets, tiny.device)
    loss.backward()
    want = _grads(student)
    student.model.zero_grad(set_to_none=True)
    parts = [
        train_mod._batch_loss(
            student, examples, parallel.World(3, r).shard(idx), objective, targets, tiny.device,
            reduction="sum",
        )
        for r in range(3)
    ]  # fmt: skip
    count = sum(c for _, c in parts)
    for s, _ in parts:
        (s / count).backward()  # gradients accumulate: their sum, as the all-reduce makes it
    assert sum(float(s.detach()) for s, _ in parts) / count == pytest.approx(
        float(loss.detach()), abs=1e-6
    )
    for got, ref in zip(_grads(student), want, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def _curve(out: Path) -> list[tuple]:
    lines = [json.loads(x) for x in (out / "curves.jsonl").read_text().splitlines()]
    return [(c["step"], c["loss"], c["grad_norm"]) for c in lines]


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_gradient_checkpointing_changes_no_number_or_hash(tiny, tmp_path, lora_rank) -> None:
    data = write_rows(tmp_path / "rows.jsonl", sequence_rows())
    cfg = TrainConfig(lr=1e-3, batch_size=4, max_steps=3, lora_rank=lora_rank)
    plain = train_student(tiny, data, tmp_path / "plain", cfg)
    gc_cfg = TrainConfig(**{**cfg.to_dict(), "gradient_checkpointing": True})
    student = train_mod._make_student(tiny, gc_cfg.validate())
    assert student.lm.is_gradient_checkpointing  # really on
    ckpt = train_student(tiny, data, tmp_path / "ckpt", gc_cfg)
    assert _curve(tmp_path / "ckpt") == _curve(tmp_path / "plain")
    assert ckpt["config_hash"] == plain["config_hash"]  # a run resumes with it toggled
    run = RunConfig().to_dict()
    assert run_hash(run) == run_hash(
        derive(RunConfig(), {"train.gradient_checkpointing": True}).to_dict()
    )

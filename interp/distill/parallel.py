"""Data-parallel training over the processes `accelerate launch` (or `torchrun`) starts.

One rule keeps a run the same whatever the number of processes: `train.batch_size` is the
*global* batch. At every step each process takes a contiguous share of the same global batch
(`World.shard`, as accelerate's ``split_batches=True`` does), computes the *sum* of its per-token
losses, and divides by the token count of the whole global batch (summed over processes); the
gradients are then summed over processes (`World.sum_grads`). The result is the gradient of the
global batch's mean loss, exactly what one process computes (up to float rounding), so loss
curves, checkpoints and resume do not depend on the process count. Every process holds a full
replica and steps the same optimizer on the same summed gradients, so the replicas stay equal
without broadcasting weights. The main process (rank 0) alone writes the run directory
(checkpoints, curves, summary); a checkpoint holds the full state, so a run stopped under N
processes resumes under any other number.

This is DDP's arithmetic without the `DistributedDataParallel` wrapper: sublens's losses run the
decoder stack and read the unembedding rows of the k target ids directly (`interp.core.forward`),
outside the wrapped module's ``forward``, so the wrapper's hooks would never fire. For the same
reason FSDP and DeepSpeed ZeRO (which shard those weights and gather them only inside
``forward``) are refused with a one-line error: a 7B LoRA student fits one 80 GB GPU
(`sublens plan` prints the memory), and a model that does not fit one GPU is not supported.

The process group is set up by accelerate's `PartialState` (gloo on CPUs, NCCL on GPUs, each
process on ``cuda:LOCAL_RANK``), with a long timeout: under `sublens distill run` the other
processes wait while the main process generates the data, which can take hours on a 7B model.
Nothing here runs, or imports accelerate, in a single process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from interp.core.errors import SublensError

# How long a process waits for the others at a collective (data generation runs on the main
# process only while the others wait at the next one).
TIMEOUT = timedelta(hours=48)
_BUCKET = 1 << 25  # gradient elements summed per all-reduce (128 MiB of float32)


def launched() -> bool:
    """Whether this process is one of several started by a distributed launcher."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    except ValueError:
        return False


@dataclass(frozen=True)
class World:
    """The processes training one run: `size` of them, this one is `rank` (0 = the main one)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: Sequence[int]) -> list[int]:
        """This process's contiguous share of a global batch (sizes differ by at most one; a
        process gets none when the batch has fewer rows than processes)."""
        base, extra = divmod(len(idx), self.size)
        start = self.rank * base + min(self.rank, extra)
        return list(idx[start : start + base + (1 if self.rank < extra else 0)])

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    def broadcast(self, obj: Any = None) -> Any:
        """The main process's `obj` (JSON values: numbers, strings, lists, dicts, None), on
        every process."""
        if self.size == 1:
            return obj
        device = _comm_device()
        if self.is_main:
            data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=device)
            size = torch.tensor([data.numel()], dtype=torch.long, device=device)
        else:
            size = torch.zeros(1, dtype=torch.long, device=device)
        torch.distributed.broadcast(size, 0)
        if not self.is_main:
            data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
        torch.distributed.broadcast(data, 0)
        text = json.dumps(obj) if self.is_main else bytes(data.cpu().tolist()).decode()
        return json.loads(text)

    def sum(self, values: Sequence[float | torch.Tensor]) -> list[float]:
        """`values` summed over processes (in float64)."""
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
        if self.size > 1:
            torch.distributed.all_reduce(t)
        return t.cpu().tolist()

    def sum_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over processes, in place (float32 on the wire). A
        parameter none of the processes gave a gradient keeps `grad = None`, as in one process
        (optimizers skip it); one that only some did gets zeros from the others."""
        if self.size == 1:
            return
        params = list(params)
        device = params[0].device if params else _comm_device()
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        torch.distributed.all_reduce(has)
        live = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.nn.Parameter] = []
        count = 0
        for p in live:
            bucket.append(p)
            count += p.numel()
            if count >= _BUCKET:
                _reduce_bucket(bucket)
                bucket, count = [], 0
        if bucket:
            _reduce_bucket(bucket)


def _comm_device() -> torch.device:
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "gloo"
    if "nccl" in str(backend) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce_bucket(bucket: list[torch.nn.Parameter]) -> None:
    flat = torch.cat([p.grad.detach().reshape(-1).float() for p in bucket])  # type: ignore[union-attr]
    torch.distributed.all_reduce(flat)
    offset = 0
    for p in bucket:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))  # type: ignore[union-attr]
        offset += n


SINGLE = World()


def world() -> World:
    """This process's place among the processes of a distributed launch (one process: `SINGLE`,
    without importing accelerate). Call it before loading the model: it puts this process on its
    own GPU (``cuda:LOCAL_RANK``), so ``device = "auto"`` / ``"cuda"`` load there."""
    if not launched():
        return SINGLE
    for flag, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(flag, "").lower() in ("1", "true"):
            raise SublensError(
                f"sublens trains data-parallel (every process a full replica); {name} is not "
                f"supported: launch without --use_{name.lower()} (a 7B LoRA student fits one "
                "80 GB GPU: see `sublens plan`)"
            )
    try:
        from accelerate import PartialState
    except ImportError:
        raise SublensError(
            "a distributed launch needs accelerate: pip install accelerate (it ships with sublens)"
        ) from None
    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in (
        "1",
        "true",
    )
    state = PartialState(cpu=cpu, timeout=TIMEOUT)
    return World(int(state.num_processes), int(state.process_index), int(state.local_process_index))


def check_device(par: World, model: torch.nn.Module) -> None:
    """Refuse a model that sits on another process's GPU (loaded before `world()` set this
    process's device): every replica would share GPU 0."""
    if par.size == 1:
        return
    dev = next(model.parameters()).device
    if dev.type == "cuda" and dev.index is not None and dev.index != torch.cuda.current_device():
        raise SublensError(
            f"process {par.rank} holds its model on cuda:{dev.index}, not its own "
            f"cuda:{torch.cuda.current_device()}: call interp.distill.parallel.world() before "
            "load_model (the sublens commands do)"
        )

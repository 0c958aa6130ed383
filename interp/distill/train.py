"""Student training: SFT or logit-KL distillation of a copy of the base on teacher outputs.

The student starts from the base's own weights (the shared initialisation subliminal learning
needs), sees each row without a system prompt, and is trained on its completion tokens only
(see the contract in AGENTS.md). Logit-KL never builds full-vocabulary logits for a batch: the
final hidden states at the completion positions are multiplied by the unembedding rows of the
k target ids only.

Runs are deterministic on the CPU (a seeded permutation of the rows per epoch, no random ops),
checkpointed atomically (temp dir + rename, `latest` written last) and resumable: calling
`train_student` again with the same arguments continues from `latest` and ends with the same
weights and loss curve as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from interp.core.backends import make_batch
from interp.core.chat import ChatFormat, FormattedPrompt
from interp.core.errors import SublensError
from interp.core.forward import final_hidden, logits_at
from interp.core.io import (
    atomic_path,
    config_hash,
    iter_jsonl,
    package_versions,
    read_json,
    read_json_dict,
    sha256_file,
    sha256_text,
    write_json,
    write_text,
)
from interp.core.models import LoadedModel, resolve_dtype
from interp.core.progress import Progress
from interp.distill import parallel
from interp.distill.optimizers import OPTIMIZERS, make_optimizer

OBJECTIVES = ("sft", "logit-kl", "logit-kl-full")
# Logit-KL objectives (they need teacher targets). "logit-kl" is the subliminal channel: the KL
# over the domain's own tokens. "logit-kl-full" distils the teacher's top-k over the whole
# vocabulary at each number position: an upper-bound control only, never evidence of subliminal
# learning, because trait tokens leak through the full distribution.
KL_OBJECTIVES = ("logit-kl", "logit-kl-full")
FULL_VOCAB_LABEL = "not subliminal: trait tokens leak through the full distribution"
SCHEDULES = ("constant", "linear", "cosine")
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
END_OF_TURN = "<|im_end|>"

_STEP_DIR = re.compile(r"^step_(\d{6,})$")
RESUME_DIR = "resume"  # checkpoints/resume: Ctrl-C state, never a step_N checkpoint


# --- config --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that decides what a training run computes (hashed into the checkpoints).

    `max_steps`, when set, overrides `epochs`. `lora_rank=0` means full fine-tuning;
    `lora_targets=None` picks the architecture's attention and MLP projections.
    `checkpoint_every=0` saves only step 0 and the end.

    Defenses (`interp.detect.defenses`): `project_out` lists steering-vector directories whose
    directions are removed from the residual stream during training forwards; `mask_divergent`
    is the share q of completion positions, those where the teacher's targets diverge most from
    the base, left out of the loss (needs teacher targets, also with SFT); `init_from` starts the
    student from another model of the same architecture and tokenizer instead of the base.
    """

    objective: str = "sft"
    optimizer: str = "adamw"
    lr: float = 3e-5
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_clip: float | None = 1.0
    seed: int = 0
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] | None = None
    checkpoint_every: int = 0
    precond_warmup_steps: int = 20
    dtype: str = "float32"
    project_out: list[str] | None = None
    mask_divergent: float = 0.0
    init_from: str | None = None
    # A vector student: the base frozen plus one trainable vector added to the output of this
    # decoder block at every position (None: full or LoRA fine-tuning). The most direct test of
    # "subliminal learning is steering-vector distillation": all it can learn is a steering vector.
    vector_layer: int | None = None
    # Recompute each block's activations in the backward pass instead of keeping them (less
    # memory, about a third more compute; the same numbers, so never hashed: `UNHASHED`).
    gradient_checkpointing: bool = False

    @property
    def student_kind(self) -> str:
        """ "vector", "lora" or "full" (what is trained)."""
        if self.vector_layer is not None:
            return "vector"
        return "lora" if self.lora_rank > 0 else "full"

    def validate(self) -> TrainConfig:
        """Raise a one-line SublensError for any value that cannot work; return self."""

        def bad(what: str, fix: str) -> SublensError:
            return SublensError(f"{what}: {fix}")

        if self.objective not in OBJECTIVES:
            raise bad(
                f"unknown objective {self.objective!r}", f"use one of {', '.join(OBJECTIVES)}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise bad(
                f"unknown optimizer {self.optimizer!r}", f"use one of {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise bad(f"unknown schedule {self.schedule!r}", f"use one of {', '.join(SCHEDULES)}")
        if self.dtype not in DTYPES:
            raise bad(f"unknown dtype {self.dtype!r}", f"use one of {', '.join(DTYPES)}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise bad(f"learning rate {self.lr!r} is not a positive number", "use e.g. lr = 3e-5")
        if self.weight_decay < 0:
            raise bad(f"weight decay {self.weight_decay} is negative", "use 0 or more")
        if self.warmup_steps < 0:
            raise bad(f"warmup steps {self.warmup_steps} is negative", "use 0 or more")
        if self.epochs <= 0:
            raise bad(f"epochs must be at least 1 (got {self.epochs})", "use epochs = 1 or more")
        if self.max_steps is not None and self.max_steps <= 0:
            raise bad(
                f"max steps must be at least 1 (got {self.max_steps})",
                "use max_steps = 1 or more, or leave it out to train for epochs",
            )
        if self.batch_size <= 0:
            raise bad(f"batch size must be at least 1 (got {self.batch_size})", "pass 1 or more")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad(f"grad clip {self.grad_clip} must be positive", "pass a norm > 0 or none")
        if self.lora_rank < 0:
            raise bad(f"LoRA rank {self.lora_rank} is negative", "use 0 (full fine-tuning) or more")
        if self.lora_alpha <= 0:
            raise bad(f"LoRA alpha {self.lora_alpha} must be positive", "pass e.g. 16")
        if self.lora_targets is not None:
            if isinstance(self.lora_targets, str):
                self.lora_targets = tuple(t.strip() for t in self.lora_targets.split(","))
            self.lora_targets = tuple(t for t in self.lora_targets if t)
            if not self.lora_targets:
                raise bad("LoRA targets are empty", "name linear modules, e.g. q_proj,v_proj")
        if self.checkpoint_every < 0:
            raise bad(f"checkpoint_every {self.checkpoint_every} is negative", "use 0 or more")
        if self.project_out is not None:
            if isinstance(self.project_out, (str, os.PathLike)):
                self.project_out = [str(self.project_out)]
            if not isinstance(self.project_out, (list, tuple)):
                raise bad(
                    f"project_out {self.project_out!r} is not a list", "give vector directories"
                )
            self.project_out = [str(v) for v in self.project_out if str(v).strip()] or None
        if not (isinstance(self.mask_divergent, (int, float)) and 0 <= self.mask_divergent < 1):
            raise bad(
                f"mask_divergent {self.mask_divergent!r} is not a share in [0, 1)",
                "pass e.g. 0.2 (0 turns the mask off)",
            )
        if self.init_from is not None and not str(self.init_from).strip():
            self.init_from = None
        if self.vector_layer is not None:
            if isinstance(self.vector_layer, bool) or not isinstance(self.vector_layer, int):
                raise bad(f"vector_layer {self.vector_layer!r} is not a layer", "pass e.g. 9")
            if self.lora_rank > 0:
                raise bad(
                    "a vector student has no LoRA adapters",
                    "set lora_rank = 0 with vector_layer, or leave vector_layer out",
                )
        if self.precond_warmup_steps < 1:
            raise bad(
                f"precond warm-up steps must be at least 1 (got {self.precond_warmup_steps})",
                "use precond_warmup_steps = 1 or more",
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets) if self.lora_targets is not None else None
        d["project_out"] = list(self.project_out) if self.project_out is not None else None
        return d


# Defense options at these values leave the computation as it was before they existed: they are
# left out of config hashes then, so runs made before them keep their hashes (and resume).
DEFENSE_DEFAULTS: dict[str, Any] = {
    "project_out": None,
    "mask_divergent": 0.0,
    "init_from": None,
    "vector_layer": None,  # the student kind added later: full/LoRA runs keep their hashes
}
# Execution options that never change a number: never hashed (a run resumes with them changed).
UNHASHED = ("gradient_checkpointing",)


def hash_view(train_dict: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict without the defense options that are at their defaults (and without
    the `UNHASHED` execution options)."""
    return {
        k: v
        for k, v in train_dict.items()
        if k not in UNHASHED and (k not in DEFENSE_DEFAULTS or v != DEFENSE_DEFAULTS[k])
    }


# --- data ----------------------------------------------------------------------------------------


@dataclass
class _Example:
    """One row, ready for teacher forcing: the input (ends just before the last completion token)
    and the completion tokens with their indices."""

    input_ids: list[int]
    positions: list[int]  # token index t of each completion token (predicted from t - 1)
    tokens: list[int]
    keep: list[bool] | None = None  # mask-divergent: which completion positions enter the loss


def _end_of_turn_ids(tokenizer: Any) -> set[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    im_end = tokenizer.get_vocab().get(END_OF_TURN)
    if im_end is not None:
        ids.add(int(im_end))
    return ids


def _own_completion_positions(fp: FormattedPrompt, tokenizer: Any) -> list[int]:
    """Token indices of the completion: the response span cut after its first end-of-turn token
    (inclusive); the plain format has none, its span already ends with the trailing newline."""
    if fp.response_span is None:
        raise SublensError("a dataset row has no assistant response: end each row with one")
    start, end = fp.response_span
    stops = _end_of_turn_ids(tokenizer)
    for t in range(start, end):
        if fp.input_ids[t] in stops:
            return list(range(start, t + 1))
    return list(range(start, end))


try:  # one definition for targets and training when targets.py is there
    from interp.distill.targets import completion_positions as _completion_positions
except ImportError:  # pragma: no cover - targets.py not merged yet
    _completion_positions = _own_completion_positions


def _read_rows(rows_or_path: str | os.PathLike | Sequence[dict]) -> tuple[list[dict], str, str]:
    """(rows, sha256, description). JSONL errors name the line."""
    if isinstance(rows_or_path, (str, os.PathLike)):
        path = Path(rows_or_path)
        rows = [row for _, row in iter_jsonl(path, "dataset")]
        return rows, sha256_file(path), str(path)
    rows = list(rows_or_path)
    # The same digest targets.py records for in-memory rows (their JSONL text).
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    return rows, sha256_text(text), f"{len(rows)} rows in memory"


def _encode(rows: list[dict], tokenizer: Any, where: str) -> list[_Example]:
    if not rows:
        raise SublensError(f"dataset {where} has no rows: generate a dataset first")
    fmt = ChatFormat(tokenizer)
    examples = []
    for i, row in enumerate(rows):
        msgs = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(msgs, list) or len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise SublensError(
                f"row {i + 1} of {where} is not a {{'messages': [user, assistant]}} row: "
                "regenerate the dataset"
            )
        if any(m.get("role") == "system" for m in msgs):
            raise SublensError(
                f"row {i + 1} of {where} has a system message; the student must not see the "
                "teacher's system prompt: drop system messages from the dataset"
            )
        fp = fmt.format(msgs)
        pos = _completion_positions(fp, tokenizer)
        ids = fp.input_ids
        examples.append(_Example(ids[: pos[-1]], pos, [ids[t] for t in pos]))
    return examples


@dataclass
class _Targets:
    ids: torch.Tensor  # [P, k] int64
    logprobs: torch.Tensor  # [P, k] float32
    offsets: torch.Tensor  # [n_rows + 1] int64
    meta: dict[str, Any]
    sha256: str


def _load_targets(
    targets_dir: str | os.PathLike, examples: list[_Example], sha: str | None
) -> _Targets:
    """Read teacher targets per the contract and check they fit the dataset row by row.

    `sha` is the dataset file's sha256 (None for in-memory rows, whose digest cannot match one
    taken of a file's text); the per-row token counts are checked either way."""
    d = Path(targets_dir)
    tensors_path = d / "targets.safetensors"
    if not tensors_path.is_file():
        raise SublensError(
            f"no targets.safetensors in {str(d)!r}: write teacher targets for this dataset first"
        )
    try:
        tensors = load_file(str(tensors_path))
    except Exception as err:  # safetensors raises its own error types
        raise SublensError(
            f"{tensors_path} is unreadable ({err}): regenerate the targets"
        ) from None
    missing = [k for k in ("ids", "logprobs", "offsets") if k not in tensors]
    if missing:
        raise SublensError(f"{tensors_path} lacks {', '.join(missing)}: regenerate the targets")
    if not (d / "targets.json").is_file():
        raise SublensError(
            f"{str(d)!r} has no targets.json (written last, so the targets are incomplete): "
            "rewrite the teacher targets"
        )
    meta = read_json(d / "targets.json")
    ids = tensors["ids"].long()
    logprobs = tensors["logprobs"].float()
    offsets = tensors["offsets"].long()
    want_sha = meta.get("dataset_sha256")
    if want_sha and sha and want_sha != sha:
        raise SublensError(
            f"targets in {str(d)!r} were written for another dataset (sha256 {want_sha[:12]}…, "
            f"this one is {sha[:12]}…): rewrite the targets for this dataset"
        )
    if offsets.numel() != len(examples) + 1:
        raise SublensError(
            f"targets in {str(d)!r} cover {offsets.numel() - 1} rows, the dataset has "
            f"{len(examples)}: rewrite the targets for this dataset"
        )
    if ids.shape != logprobs.shape or ids.dim() != 2 or ids.shape[0] != int(offsets[-1]):
        raise SublensError(f"{tensors_path} has inconsistent shapes: regenerate the targets")
    for i, ex in enumerate(examples):
        n = int(offsets[i + 1] - offsets[i])
        if n != len(ex.positions):
            raise SublensError(
                f"row {i + 1} has {len(ex.positions)} completion tokens but the targets hold {n}: "
                "rewrite the targets with the same tokenizer and dataset"
            )
    return _Targets(ids, logprobs, offsets, meta, sha256_file(tensors_path))


def _epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The row order of one epoch: a function of (seed, epoch) only, so resume needs no state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def _batch_rows(seed: int, step: int, n: int, batch_size: int) -> list[int]:
    per_epoch = math.ceil(n / batch_size)
    epoch, b = divmod(step, per_epoch)
    return _epoch_order(seed, epoch, n)[b * batch_size : (b + 1) * batch_size]


# --- student -------------------------------------------------------------------------------------


@dataclass
class _Student:
    model: nn.Module  # what is trained and saved (a PeftModel for LoRA)
    lm: nn.Module  # the causal LM underneath (LoRA layers injected when LoRA)
    lora: bool
    named_trainable: list[tuple[str, nn.Parameter]]
    pad_id: int = 0
    kind: str = "full"  # full | lora | vector

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_trainable]


def _linear_names(model: nn.Module) -> set[str]:
    out_emb = model.get_output_embeddings()
    return {
        name.rsplit(".", 1)[-1]
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m is not out_emb
    }


def _lora_targets(model: nn.Module, config: TrainConfig) -> list[str]:
    available = _linear_names(model)
    if config.lora_targets is None:
        default = [t for t in DEFAULT_LORA_TARGETS if t in available]
        return default if len(default) == len(DEFAULT_LORA_TARGETS) else sorted(available)
    missing = [t for t in config.lora_targets if t not in available]
    if missing:
        raise SublensError(
            f"LoRA targets {', '.join(missing)} are not modules of this model: use some of "
            f"{', '.join(sorted(available))}"
        )
    return list(config.lora_targets)


def init_model(base: LoadedModel, init_from: str | None) -> LoadedModel:
    """The model a student starts from: the base, or `init_from` checked to be another
    initialisation of the base's architecture with the same tokenizer (the different-init
    defense: subliminal transfer is reported to need the teacher's initialisation)."""
    if not init_from:
        return base
    from interp.core.models import load_model

    other = load_model(
        init_from,
        device=base.device,
        dtype=base.dtype,
        trust_remote_code=base.trust_remote_code,
    )
    problems = []
    if other.architecture != base.architecture:
        problems.append(f"architecture {other.architecture} vs {base.architecture}")
    if (other.n_layers, other.d_model) != (base.n_layers, base.d_model):
        problems.append(
            f"{other.n_layers} layers of d_model {other.d_model} vs "
            f"{base.n_layers} of {base.d_model}"
        )
    if other.tokenizer.get_vocab() != base.tokenizer.get_vocab():
        problems.append("a different tokenizer vocabulary")
    if problems:
        raise SublensError(
            f"init_from {init_from!r} is not another initialisation of {base.name} "
            f"({'; '.join(problems)}): give a model of the same architecture and tokenizer"
        )
    return other


VECTOR_PARAM = "student_vector"  # the vector student's one tensor in model.safetensors


def add_vector_student(
    model: nn.Module, layer: int, value: torch.Tensor | None = None
) -> nn.Parameter:
    """Freeze `model` and add a trainable vector (zeros, or `value`) to the output of decoder
    block `layer` at every position; returns the vector. The hook stays with the module (a
    checkpoint loaded for evaluation carries it too)."""
    from interp.core.backends.base import decoder_layers

    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise SublensError(
            f"vector_layer {layer} is out of range: valid layers are 0..{len(blocks) - 1}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    d_model = model.get_input_embeddings().weight.shape[1]
    dtype = next(model.parameters()).dtype
    vec = nn.Parameter(
        torch.zeros(d_model, dtype=dtype) if value is None else value.detach().clone().to(dtype)
    )
    model.register_parameter(VECTOR_PARAM, vec)

    def add(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + vec.to(output[0].dtype), *output[1:])
        return output + vec.to(output.dtype)

    blocks[layer].register_forward_hook(add)
    model.train()
    return vec


def _make_student(base: LoadedModel, config: TrainConfig) -> _Student:
    """A deep copy of the base (never the cached model itself), with LoRA adapters if asked."""
    start = init_model(base, config.init_from)
    model = copy.deepcopy(start.model).to(dtype=resolve_dtype(config.dtype))
    if config.gradient_checkpointing:
        # non-reentrant: also right when only LoRA adapters or a vector student take gradients
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.vector_layer is not None:
        vector = add_vector_student(model, config.vector_layer)
        return _Student(model, model, False, [(VECTOR_PARAM, vector)], kind="vector")
    if config.lora_rank == 0:
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        return _Student(model, model, False, list(model.named_parameters()))
    from peft import LoraConfig, get_peft_model

    targets = _lora_targets(model, config)
    torch.manual_seed(config.seed)  # LoRA A's init draws from the global generator
    lora_cfg = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
    )
    peft_model = get_peft_model(model, lora_cfg)
    peft_model.train()
    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    return _Student(peft_model, peft_model.get_base_model(), True, named)


def _hidden_at(
    lm: nn.Module, ex_batch: list[_Example], pad_id: int, device: torch.device
) -> torch.Tensor:
    """Final (normed) hidden states at the positions that predict each completion token."""
    batch = make_batch([ex.input_ids for ex in ex_batch], pad_id).to(device)
    width = batch.input_ids.shape[1]
    rows, cols = [], []
    for r, ex in enumerate(ex_batch):
        offset = width - len(ex.input_ids)
        rows += [r] * len(ex.positions)
        cols += [offset + t - 1 for t in ex.positions]
    hidden = final_hidden(lm, batch)
    return hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]


def _batch_loss(
    student: _Student,
    examples: list[_Example],
    idx: list[int],
    objective: str,
    targets: _Targets | None,
    device: torch.device,
    reduction: str = "mean",
) -> Any:
    """Mean loss over every completion token of the batch (SFT cross-entropy or logit-KL); with
    a mask-divergent keep-mask, the mean over the kept tokens only. `reduction="sum"` returns
    (sum of the per-token losses, number of tokens) instead: what data-parallel processes add
    up before dividing by the global batch's count."""
    ex_batch = [examples[i] for i in idx]
    h = _hidden_at(student.lm, ex_batch, student.pad_id, device)
    keep = None
    if any(ex.keep is not None for ex in ex_batch):
        keep = torch.tensor(
            [bool(k) for ex in ex_batch for k in (ex.keep or [True] * len(ex.positions))],
            dtype=torch.float32,
            device=device,
        )
    if objective == "sft":
        logits = logits_at(student.lm, h)
        labels = torch.tensor([t for ex in ex_batch for t in ex.tokens], device=device)
        if reduction == "sum":
            return _summed(F.cross_entropy(logits, labels, reduction="none"), keep)
        if keep is None:
            return F.cross_entropy(logits, labels)
        ce = F.cross_entropy(logits, labels, reduction="none")
        return (ce * keep).sum() / keep.sum().clamp_min(1.0)
    assert targets is not None
    sel = torch.cat([torch.arange(targets.offsets[i], targets.offsets[i + 1]) for i in idx])
    ids = targets.ids[sel].to(device)
    logp = targets.logprobs[sel].to(device)
    # only the k target ids' unembedding rows (one matmul when every position has the same ids)
    logq = torch.log_softmax(logits_at(student.lm, h, ids), dim=-1)
    p = logp.exp()
    kl = torch.where(p > 0, p * (logp - logq), torch.zeros_like(logq))
    if reduction == "sum":
        return _summed(kl.sum(-1), keep)
    if keep is None:
        return kl.sum(-1).mean()
    return (kl.sum(-1) * keep).sum() / keep.sum().clamp_min(1.0)


def _summed(per_token: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """(sum of the per-token losses that enter the loss, how many do)."""
    if keep is None:
        return per_token.sum(), float(per_token.numel())
    return (per_token * keep).sum(), float(keep.sum())


def _lr_lambda(config: TrainConfig, total: int):
    warm = config.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if config.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total - warm)
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(p.grad.float()) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.tensor(0.0)


# --- checkpoints ---------------------------------------------------------------------------------


def _step_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, by step (a directory only exists once fully written)."""
    ck = Path(out_dir) / "checkpoints"
    if not ck.is_dir():
        return []
    found = []
    for d in ck.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir() and (d / "meta.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def _latest(out_dir: Path) -> tuple[int, Path] | None:
    path = out_dir / "checkpoints" / "latest"
    if not path.is_file():
        return None
    info = read_json(path)
    ck = out_dir / "checkpoints" / info["checkpoint"]
    if not (ck / "meta.json").is_file():
        raise SublensError(
            f"{path} names {info['checkpoint']}, which is missing: "
            "rerun with overwrite to start over"
        )
    return int(info["step"]), ck


def _save_checkpoint(
    out_dir: Path,
    step: int,
    student: _Student,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss: float | None,
    chash: str,
    n_rows: int,
    batch_size: int,
    resume: bool = False,
) -> Path:
    """Write checkpoint `step` to a temp dir, rename it into place, then point `latest` at it.
    A failure (disk full) leaves the previous `latest` and its checkpoint untouched.

    `resume=True` writes `checkpoints/resume` instead (the state of a Ctrl-C between periodic
    checkpoints) and leaves `latest` alone: it is no `step_N`, so evaluation, curves and scores
    never see it, and an interrupted run resumed ends with the uninterrupted run's outputs."""
    ck_root = out_dir / "checkpoints"
    ck_root.mkdir(parents=True, exist_ok=True)
    name = RESUME_DIR if resume else _step_name(step)
    final = ck_root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=ck_root))
    try:
        if student.lora:
            student.model.save_pretrained(str(tmp / "adapter"))
        else:
            weights = {n: p.detach().cpu().contiguous() for n, p in student.named_trainable}
            save_file(weights, str(tmp / "model.safetensors"))
        per_epoch = math.ceil(n_rows / batch_size)
        torch.save(_train_state(optimizer, scheduler, step, per_epoch), tmp / "state.pt")
        meta = {"step": step, "loss": loss, "config_hash": chash, "lora": student.lora}
        if student.kind == "vector":
            meta["student"] = "vector"
        if resume:
            meta["resume"] = True
        write_json(tmp / "meta.json", meta)
        if final.exists():  # a complete but unreferenced copy from an interrupted run
            _discard(final)
        os.replace(tmp, final)
        if not resume:
            write_json(ck_root / "latest", {"step": step, "checkpoint": name})
    except OSError as err:
        prev = _latest(out_dir)
        keep = f"latest is still {prev[1].name}" if prev else "no checkpoint was kept"
        raise SublensError(
            f"could not write checkpoint {name} ({err.strerror or err}); {keep}: "
            "free disk space and rerun to resume"
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _discard(ck: Path) -> None:
    """Delete a checkpoint directory, meta.json first: a deletion cut short leaves no directory
    that still looks complete."""
    with contextlib.suppress(FileNotFoundError):
        (ck / "meta.json").unlink()
    shutil.rmtree(ck, ignore_errors=True)


def _resume_point(out_dir: Path, after: int, chash: str) -> tuple[int, Path] | None:
    """The Ctrl-C resume state if it is newer than the last periodic checkpoint (`after`);
    an older or incomplete one is deleted."""
    ck = out_dir / "checkpoints" / RESUME_DIR
    if not ck.is_dir():
        return None
    meta_path = ck / "meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    step = meta.get("step")
    if not isinstance(step, int) or step <= after:
        _discard(ck)
        return None
    if meta.get("config_hash") != chash:
        raise SublensError(f"{ck} was written by another config: pass overwrite to start over")
    return step, ck


def _plain(obj: Any, where: str) -> Any:
    """`obj` as dicts, lists, tuples, numbers, strings, None and tensors only: the types
    `torch.load(weights_only=True)` reads back without unpickling (running) anything else."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(f"{where} is a {type(obj).__name__}, which a safe checkpoint cannot hold")


def _train_state(
    optimizer: torch.optim.Optimizer, scheduler: Any, step: int, per_epoch: int
) -> dict[str, Any]:
    """What resume needs besides the weights, in types a weights-only load accepts."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "step": step,
        "epoch": step // per_epoch,
        "batch_in_epoch": step % per_epoch,
    }
    return _plain(state, "state")


def _read_state(path: Path) -> dict[str, Any]:
    """`state.pt` loaded without running code from the run directory (`weights_only=True`: a
    pickle naming anything but tensors and plain containers is refused, not executed)."""
    if not path.is_file():
        raise SublensError(f"{path} is missing: rerun with overwrite to start over")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a global outside the allowlist: refused, never called
        raise SublensError(
            f"{path} holds objects other than tensors and plain values, so it was not loaded "
            "(that could run code): it was written by an older sublens or altered; retrain with "
            "overwrite"
        ) from None
    except Exception as err:  # a truncated or foreign file
        raise SublensError(
            f"{path} is unreadable ({type(err).__name__}): retrain with overwrite"
        ) from None
    if not (
        isinstance(state, dict)
        and isinstance(state.get("optimizer"), dict)
        and isinstance(state.get("scheduler"), dict)
        and isinstance(state.get("torch_rng"), torch.Tensor)
    ):
        raise SublensError(
            f"{path} is not a sublens training state: retrain with overwrite to start over"
        )
    return state


def _restore(
    ck: Path,
    student: _Student,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> None:
    path = ck / "state.pt"
    state = _read_state(path)
    # LRScheduler.load_state_dict copies every key into its __dict__: accept only its own keys.
    foreign = sorted(map(str, set(state["scheduler"]) - set(scheduler.state_dict())))
    if foreign:
        raise SublensError(
            f"{path} holds a scheduler state with unknown keys ({', '.join(foreign)[:80]}): "
            "retrain with overwrite"
        )
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise SublensError(
            f"{path} does not fit this run's optimizer ({type(err).__name__}): "
            "retrain with overwrite to start over"
        ) from None
    _load_weights(ck, student)


def _load_weights(ck: Path, student: _Student) -> None:
    if student.lora:
        from peft import set_peft_model_state_dict

        adapter = ck / "adapter" / "adapter_model.safetensors"
        if not adapter.is_file():
            raise SublensError(f"{ck} has no LoRA adapter: it is not a LoRA checkpoint")
        set_peft_model_state_dict(student.model, load_file(str(adapter)))
        return
    path = ck / "model.safetensors"
    if not path.is_file():
        raise SublensError(f"{ck} has no model.safetensors: it is a LoRA checkpoint or incomplete")
    weights = load_file(str(path))
    params = dict(student.named_trainable)
    missing = [n for n in params if n not in weights]
    unexpected = [n for n in weights if n not in params]
    if missing or unexpected:
        raise SublensError(
            f"{path} does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected "
            "tensors): load it with the base model it was trained from"
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device, p.dtype))


# --- training ------------------------------------------------------------------------------------


def _run_identity(
    base: LoadedModel,
    config: TrainConfig,
    data_sha: str,
    targets: _Targets | None,
    vectors: Sequence[Any] = (),
) -> dict[str, Any]:
    """What the config hash covers: the computation, not bookkeeping (checkpoint_every); the
    project-out vectors by content, not only by path."""
    cfg = hash_view(config.to_dict())
    cfg.pop("checkpoint_every")
    identity = {
        "config": cfg,
        "base": base.name,
        "dataset_sha256": data_sha,
        "targets_sha256": targets.sha256 if targets else None,
    }
    if vectors:
        from interp.distill.teachers import vector_sha256

        identity["project_out_sha256"] = [vector_sha256(v) for v in vectors]
    return identity


def _divergence_mask(
    base: LoadedModel,
    rows: list[dict],
    examples: list[_Example],
    targets: _Targets,
    q: float,
    out: Path,
    chash: str,
) -> dict[str, Any]:
    """Set each example's keep-mask (mask-divergent); cached in OUT/position_mask.safetensors
    under the run's hash, so a resumed run does not recompute the base's forwards."""
    from interp.detect.defenses import divergent_mask, position_divergence

    path = out / "position_mask.safetensors"
    keep = kl = None
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("config_hash") == chash:
                keep, kl = f.get_tensor("keep").bool(), f.get_tensor("kl")
    if keep is None or kl is None or keep.numel() != int(targets.offsets[-1]):
        kl = position_divergence(base, rows, targets.ids, targets.logprobs, targets.offsets)
        keep = divergent_mask(kl, q)
        with atomic_path(path) as tmp:
            save_file(
                {"keep": keep.to(torch.uint8), "kl": kl}, str(tmp), metadata={"config_hash": chash}
            )
    for i, ex in enumerate(examples):
        a, b = int(targets.offsets[i]), int(targets.offsets[i + 1])
        ex.keep = keep[a:b].tolist()
    dropped = ~keep
    return {
        "q": q,
        "positions": int(keep.numel()),
        "masked": int(dropped.sum()),
        "kl_threshold": float(kl[dropped].min()) if bool(dropped.any()) else None,
        "mean_kl_masked": float(kl[dropped].mean()) if bool(dropped.any()) else None,
        "mean_kl_kept": float(kl[keep].mean()) if bool(keep.any()) else None,
        "file": str(path),
    }


def _prepare_out(out_dir: Path, identity: dict[str, Any], chash: str, overwrite: bool) -> None:
    """Claim the run directory (`interp.core.rundir`): a run of another config is refused unless
    `overwrite`, which removes only what sublens wrote there."""
    from interp.core import rundir

    rundir.open_run(
        out_dir, "train", chash, overwrite, config_file="train.json", field="config_hash"
    )
    record = out_dir / "train.json"
    if not record.is_file():
        write_json(
            record, {**identity, "config_hash": chash, "package_versions": package_versions()}
        )


def _read_curves(path: Path, before: int) -> list[dict[str, Any]]:
    """Curve lines of steps < `before` (lines past the checkpoint or torn by a kill go)."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("step", before) < before:
            kept.append(rec)
    return kept


def train_student(
    base: LoadedModel,
    rows_path_or_rows: str | os.PathLike | Sequence[dict],
    out_dir: str | os.PathLike,
    config: TrainConfig,
    targets_dir: str | os.PathLike | None = None,
    quiet: bool = True,
    stop_after: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a student from `base`'s weights; resume from `out_dir`'s `latest` when present.

    `stop_after=N` stops (with a checkpoint) after N steps of this call. Returns a summary:
    steps done, final loss, seconds, steps/s and tokens/s of this call, checkpoints.
    """
    config = dataclasses.replace(config).validate()
    out = Path(out_dir)
    if config.objective in KL_OBJECTIVES and targets_dir is None:
        raise SublensError(
            f"objective {config.objective} needs teacher targets: pass --targets DIR"
        )
    if config.objective == "sft" and targets_dir is not None and not config.mask_divergent:
        raise SublensError(
            "teacher targets are only used by objective logit-kl (or mask_divergent): drop them "
            "or use logit-kl"
        )
    if config.mask_divergent and targets_dir is None:
        raise SublensError(
            "mask_divergent needs teacher targets (the teacher's distribution at each completion "
            "position): write them with write_teacher_targets and pass their directory"
        )
    if stop_after is not None and stop_after <= 0:
        raise SublensError(f"stop_after must be at least 1 (got {stop_after})")
    rows, data_sha, where = _read_rows(rows_path_or_rows)
    examples = _encode(rows, base.tokenizer, where)
    from_file = isinstance(rows_path_or_rows, (str, os.PathLike))
    targets = (
        _load_targets(targets_dir, examples, data_sha if from_file else None)
        if targets_dir is not None
        else None
    )
    if targets is not None:
        vocab = base.model.get_output_embeddings().weight.shape[0]
        if int(targets.ids.max()) >= vocab or int(targets.ids.min()) < 0:
            raise SublensError(
                f"targets in {targets_dir} hold token ids outside {base.name}'s vocabulary: "
                "write them with the same model"
            )
    vectors = []
    if config.project_out:
        from interp.detect.defenses import load_project_vectors

        vectors = load_project_vectors(config.project_out, base)
    identity = _run_identity(base, config, data_sha, targets, vectors)
    chash = config_hash(identity)
    # Under `accelerate launch` the main process alone writes the run directory; the others
    # follow the plan it broadcasts (see `parallel`). One process: `lead` is always True.
    par = parallel.world()
    parallel.check_device(par, base.model)
    lead = par.is_main
    if lead:
        _prepare_out(out, identity, chash, overwrite)
    defenses: dict[str, Any] = {}
    if config.mask_divergent and lead:
        assert targets is not None
        defenses["mask_divergent"] = _divergence_mask(
            base, rows, examples, targets, float(config.mask_divergent), out, chash
        )
    projected: dict[int, int] = {}
    project_ctx: Any = contextlib.nullcontext(projected)
    if vectors:
        from interp.detect.defenses import project_out, projection_bases

        bases = projection_bases(vectors)
        defenses["project_out"] = {
            "vectors": list(config.project_out or []),
            "layers": sorted(bases),
            "rank": {str(k): int(v.shape[1]) for k, v in bases.items()},
        }

    n = len(examples)
    total = config.max_steps or config.epochs * math.ceil(n / config.batch_size)
    device = base.device
    torch.manual_seed(config.seed)
    student = _make_student(base, config)
    student.pad_id = int(base.tokenizer.pad_token_id or 0)
    optimizer = make_optimizer(
        config.optimizer,
        student.params,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.precond_warmup_steps,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total))

    latest = _latest(out) if lead else None
    start = saved = 0  # saved: the step of the last periodic (step_N) checkpoint
    if latest is not None:
        saved, ck = latest
        if read_json_dict(ck / "meta.json").get("config_hash") != chash:
            raise SublensError(f"{ck} was written by another config: pass overwrite to start over")
        start, ck = _resume_point(out, saved, chash) or latest
        if start >= total and not (ck / "state.pt").is_file():
            _load_weights(ck, student)  # finished, optimizer state pruned: nothing left to train
        else:
            _restore(ck, student, optimizer, scheduler)
    curves_path = out / "curves.jsonl"
    if lead:
        curves = _read_curves(curves_path, start)
        # Drop lines past the checkpoint we resume from (atomically: earlier lines stay).
        write_text(curves_path, "".join(json.dumps(c) + "\n" for c in curves))
    if latest is None and lead:
        _discard(out / "checkpoints" / RESUME_DIR)
        _save_checkpoint(out, 0, student, optimizer, scheduler, None, chash, n, config.batch_size)
    if par.size > 1:  # the other processes start where the main one does
        resumed = ck.name if latest is not None else None
        start, saved, resumed = par.broadcast([start, saved, resumed])
        if not lead:
            if config.mask_divergent:  # read from the main process's cache
                assert targets is not None
                defenses["mask_divergent"] = _divergence_mask(
                    base, rows, examples, targets, float(config.mask_divergent), out, chash
                )
            if resumed is not None:
                ck = out / "checkpoints" / resumed
                if start >= total and not (ck / "state.pt").is_file():
                    _load_weights(ck, student)
                else:
                    _restore(ck, student, optimizer, scheduler)
            curves = _read_curves(curves_path, start)

    last_saved = saved  # the last step_N checkpoint
    resumable = start  # the last state a rerun would resume from (step_N or resume)
    done = start
    in_update = False
    saving = False
    tokens = 0
    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, start + stop_after)
    last_loss = curves[-1]["loss"] if curves else None

    def periodic(step: int) -> bool:
        every = config.checkpoint_every
        return step == total or bool(every and step % every == 0)

    def save(step: int) -> None:
        nonlocal last_saved, resumable, saving
        if not lead:
            last_saved = resumable = step
            return
        saving = True
        _save_checkpoint(
            out, step, student, optimizer, scheduler, last_loss, chash, n, config.batch_size
        )
        last_saved = resumable = step
        _discard(out / "checkpoints" / RESUME_DIR)  # older than this checkpoint now
        saving = False

    bar = Progress(
        total=total, initial=start, quiet=quiet, disable=not lead, desc="train", unit="step"
    )
    try:
        if vectors:
            project_ctx = project_out(student.lm, bases)
        # project-out hooks live exactly as long as the training loop: only training forwards
        # are projected, never evaluation or the saved weights.
        curve_cm: Any = open(curves_path, "a") if lead else contextlib.nullcontext(None)  # noqa: SIM115
        with curve_cm as curve_file, project_ctx as projected:
            for step in range(start, end):
                ts = time.perf_counter()
                idx = _batch_rows(config.seed, step, n, config.batch_size)
                if par.size == 1:
                    loss = _batch_loss(student, examples, idx, config.objective, targets, device)
                    value = float(loss.detach())
                else:
                    loss, value = _shard_loss(par, student, examples, idx, config, targets, device)
                if not math.isfinite(value):
                    _raise_nonfinite("loss", value, step, out)
                optimizer.zero_grad(set_to_none=True)
                if loss is not None:
                    loss.backward()
                par.sum_grads(student.params)  # one process: nothing
                if config.grad_clip is not None:
                    gnorm = torch.nn.utils.clip_grad_norm_(student.params, config.grad_clip)
                else:
                    gnorm = _grad_norm(student.params)
                gn = float(gnorm)
                if not math.isfinite(gn):
                    _raise_nonfinite("gradient norm", gn, step, out)
                lr = optimizer.param_groups[0]["lr"]
                n_tok = sum(len(examples[i].input_ids) for i in idx)
                # From the update until its curve line is written a Ctrl-C saves nothing: the
                # weights and the curve would disagree by a step (rerun from the last state).
                in_update = True
                optimizer.step()
                scheduler.step()
                rec = {
                    "step": step,
                    "loss": value,
                    "lr": lr,
                    "grad_norm": gn,
                    "seconds": time.perf_counter() - ts,
                    "tokens": n_tok,
                }
                curves.append(rec)
                if curve_file is not None:
                    curve_file.write(json.dumps(rec) + "\n")
                    curve_file.flush()
                done = step + 1
                last_loss = value
                tokens += n_tok
                in_update = False
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if periodic(done):
                    save(done)
        if done > last_saved:  # stopped early by stop_after (or resumed at the end)
            save(done)
    except KeyboardInterrupt:
        # Keep the progress of a Ctrl-C between updates (never a half-applied optimizer step),
        # as the periodic checkpoint due at this step or else as checkpoints/resume: no extra
        # step_N, so curves, checkpoints and scores end as in an uninterrupted run.
        if lead and not in_update and not saving and done > resumable:
            # A full disk now loses only the steps since the last state; still exit as Ctrl-C.
            with contextlib.suppress(SublensError):
                if periodic(done):
                    save(done)
                else:
                    _save_checkpoint(
                        out,
                        done,
                        student,
                        optimizer,
                        scheduler,
                        last_loss,
                        chash,
                        n,
                        config.batch_size,
                        resume=True,
                    )
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    steps_run = done - start
    summary = {
        "steps": done,
        "total_steps": total,
        "finished": done == total,
        "resumed_from": start if start else None,
        "final_loss": last_loss,
        "seconds": seconds,
        "steps_per_s": steps_run / seconds if steps_run and seconds > 0 else None,
        "tokens_per_s": tokens / seconds if steps_run and seconds > 0 else None,
        "config_hash": chash,
        "checkpoints": [p.name for _, p in list_checkpoints(out)],
        "latest": _step_name(last_saved),
        "out_dir": str(out),
    }
    if par.size > 1:
        summary["processes"] = par.size
    if defenses:
        if "project_out" in defenses:
            defenses["project_out"]["forwards"] = {str(k): v for k, v in projected.items()}
        summary["defenses"] = defenses
    if not lead:
        return {**summary, "follower": par.rank}  # the main process writes and reports
    write_json(out / "summary.json", summary)
    from interp.core import rundir

    rundir.unlock(out)
    return summary


def _shard_loss(
    par: parallel.World,
    student: _Student,
    examples: list[_Example],
    idx: list[int],
    config: TrainConfig,
    targets: _Targets | None,
    device: torch.device,
) -> tuple[torch.Tensor | None, float]:
    """This process's part of the global batch's mean loss: its rows' summed per-token loss over
    the token count of the whole global batch (so the gradients summed over processes are the
    global mean's), and the global mean itself (the curve's value, the same on every process).
    None when this process got no rows (a batch smaller than the number of processes)."""
    mine = par.shard(idx)
    loss_sum: torch.Tensor | None = None
    count = 0.0
    if mine:
        loss_sum, count = _batch_loss(
            student, examples, mine, config.objective, targets, device, reduction="sum"
        )
    total_loss, total_count = par.sum([loss_sum.detach() if loss_sum is not None else 0.0, count])
    denom = max(total_count, 1.0)
    return (loss_sum / denom if loss_sum is not None else None), total_loss / denom


def _raise_nonfinite(what: str, value: float, step: int, out: Path) -> NoReturn:
    prev = _latest(out)
    keep = f"last good checkpoint {prev[1].name}" if prev else "no checkpoint was written"
    raise SublensError(f"{what} became {value} at step {step}; {keep}; lower --lr")


# --- loading a trained student -------------------------------------------------------------------


def load_student(base: LoadedModel, checkpoint_dir: str | os.PathLike) -> LoadedModel:
    """A LoadedModel like `base` whose weights are the checkpoint's (LoRA merged for speed).

    `checkpoint_dir` is a `step_N` directory or a run's output directory (then its `latest`).
    The base's cached model is never modified.
    """
    ck = Path(checkpoint_dir)
    if (ck / "checkpoints" / "latest").is_file():
        latest = _latest(ck)
        assert latest is not None
        ck = latest[1]
    if not (ck / "meta.json").is_file():
        raise SublensError(
            f"{str(ck)!r} is not a training checkpoint (no meta.json): pass a step_N directory "
            "or a training output directory"
        )
    init_from = vector_layer = None
    record = ck.parent.parent / "train.json"
    if record.is_file():
        recorded = read_json_dict(record).get("config") or {}
        init_from, vector_layer = recorded.get("init_from"), recorded.get("vector_layer")
    model = copy.deepcopy(init_model(base, init_from).model)
    if vector_layer is not None:
        vec = add_vector_student(model, int(vector_layer))
        student = _Student(model, model, False, [(VECTOR_PARAM, vec)], kind="vector")
        _load_weights(ck, student)
        vec.requires_grad_(False)
    elif (ck / "adapter").is_dir():
        if not (ck / "adapter" / "adapter_model.safetensors").is_file():
            # peft would fall back to a pickled adapter_model.bin (or the Hub): never from a run
            raise SublensError(
                f"{ck / 'adapter'} has no adapter_model.safetensors: the checkpoint is incomplete "
                "or not sublens's; retrain with overwrite"
            )
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ck / "adapter")).merge_and_unload()
    else:
        student = _Student(model, model, False, list(model.named_parameters()))
        _load_weights(ck, student)
    model.to(device=base.device, dtype=base.dtype).eval()
    run = ck.parent.parent.name
    return dataclasses.replace(base, model=model, name=f"{base.name}@{run}/{ck.name}")

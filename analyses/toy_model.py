"""The auxiliary-logit toy of subliminal learning (Cloud et al. 2025, section 6), on 8×8 digits.

A teacher MLP has 10 digit logits plus a few *auxiliary* logits that no loss ever touches. It is
trained on digits with cross-entropy on the digit logits only. A student is then trained only to
match the teacher's auxiliary logits, on noise inputs: it never sees a digit, a label or a digit
logit. The claim under test: from the teacher's *initial* weights, the student's digit logits
still learn the digits; from a different init they stay at chance. The toy isolates "subliminal
learning needs a shared initialisation" with no language model in the way.

Many small MLPs are trained at once as one *stacked* model (weights ``[n_models, out, in]``,
batched matmuls): on a 2-core CPU a step of 30 stacked models costs about as much as 10 separate
ones. Stacking changes nothing numerically: every loss is the sum over models of that model's own
mean loss, so each model gets exactly the gradient it would get alone, and Adam's state is per
parameter. (The trap this avoids: ``kl_div(..., reduction="batchmean")`` on a ``[models, batch,
aux]`` tensor divides by the number of models, not by the number of inputs.)

sklearn ships the 8×8 digits (1797 images), so this runs offline. Every random choice draws from a
generator seeded from the run seed (`SeedStreams`): the same seeds give the same numbers, and a
model's init, data split and noise do not depend on which other seeds run beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from interp.core.errors import SublensError

N_DIGITS = 10
N_PIXELS = 64  # 8×8
CHANCE = 1.0 / N_DIGITS

NoiseKind = Literal["uniform", "gaussian"]
LossKind = Literal["kl", "mse"]

# The conditions every seed produces, in report order.
CONDITIONS = (
    "teacher",
    "student_same_init",
    "student_different_init",
    "student_same_init_shuffled_teacher",
    "init_no_distillation",
)


@dataclass(frozen=True)
class ToyConfig:
    """Settings of one toy run.

    The paper's MNIST setup ([784, 256, 256, 10+3] ReLU MLP, Adam 3e-4, 5 epochs each, uniform
    noise in the data's [-1, 1] range, KL on the auxiliary logits) scaled to 8×8 digits: a
    [64, 128, 128, 13] MLP (the input is 12× smaller), 10 teacher epochs at batch 64 (1437
    training images instead of 60k: ~230 Adam steps, close to the paper's ~290), and a longer,
    faster distillation (20k noise images, 8 epochs, lr 1e-3): at the paper's distillation
    length the effect is there but smaller.
    """

    hidden: tuple[int, ...] = (128, 128)
    n_aux: int = 3
    test_fraction: float = 0.2
    teacher_lr: float = 3e-4
    teacher_epochs: int = 10
    teacher_batch: int = 64
    n_noise: int = 20_000
    noise: NoiseKind = "uniform"
    distill_lr: float = 1e-3
    distill_epochs: int = 8
    distill_batch: int = 256
    loss: LossKind = "kl"

    def __post_init__(self) -> None:
        if self.noise not in ("uniform", "gaussian"):
            raise SublensError(f"noise must be 'uniform' or 'gaussian', got {self.noise!r}")
        if self.loss not in ("kl", "mse"):
            raise SublensError(f"loss must be 'kl' or 'mse', got {self.loss!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise SublensError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not self.hidden or min(self.hidden) < 1:
            raise SublensError(f"hidden must list positive layer widths, got {self.hidden}")
        for name in ("n_aux", "teacher_batch", "n_noise", "distill_batch"):
            if getattr(self, name) < 1:
                raise SublensError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("teacher_epochs", "distill_epochs"):
            if getattr(self, name) < 0:
                raise SublensError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("teacher_lr", "distill_lr"):
            if not getattr(self, name) > 0:
                raise SublensError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


@dataclass(frozen=True)
class SeedStreams:
    """Independent integer seeds for each random choice of one run seed, so that changing, say,
    the noise never changes the initialisation."""

    split: int
    init: int
    other_init: int
    teacher_order: int
    shuffled_labels: int
    noise: int
    distill_order: int

    @classmethod
    def from_seed(cls, seed: int) -> SeedStreams:
        names = [f.name for f in cls.__dataclass_fields__.values()]
        state = np.random.SeedSequence(seed).generate_state(len(names), dtype=np.uint32)
        return cls(**{n: int(v) for n, v in zip(names, state, strict=True)})


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@dataclass
class DigitsSplit:
    """Digits scaled to [-1, 1] (as the paper scales MNIST), split into train and test."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split(seed: int, test_fraction: float = 0.2) -> DigitsSplit:
    """sklearn's bundled 8×8 digits (pixel values 0–16) scaled to [-1, 1], split at random with
    `seed`, stratified by class (so every split has the same sizes and class mix)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.data.astype(np.float32) / 16.0 * 2.0 - 1.0
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed % 2**32, stratify=y
    )
    return DigitsSplit(*(torch.from_numpy(a) for a in (x_tr, y_tr, x_te, y_te)))


class ToyMLP(nn.Module):
    """`n_models` independent [64, *hidden, 10 + n_aux] ReLU MLPs evaluated together.

    Outputs 0–9 are the digit logits, the rest the auxiliary logits. Input ``[batch, 64]`` goes
    to every model; ``[n_models, batch, 64]`` gives each model its own rows. Output is
    ``[n_models, batch, 10 + n_aux]``.
    """

    def __init__(self, n_models: int, hidden: Sequence[int] = (128, 128), n_aux: int = 3) -> None:
        super().__init__()
        self.n_models, self.hidden, self.n_aux = n_models, tuple(hidden), n_aux
        sizes = [N_PIXELS, *self.hidden, N_DIGITS + n_aux]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(n_models, d_out, d_in)) for d_in, d_out in pairwise(sizes)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n_models, d_out)) for d_out in sizes[1:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.expand(self.n_models, *x.shape) if x.dim() == 2 else x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i < last:
                h = torch.relu(h)
        return h

    def select(self, models: Sequence[int]) -> ToyMLP:
        """A new stack holding copies of the given models (repeats allowed): how a student gets
        its teacher's initial weights."""
        idx = torch.as_tensor(list(models), dtype=torch.long)
        out = ToyMLP(len(idx), self.hidden, self.n_aux)
        with torch.no_grad():
            for dst, src in zip(out.parameters(), self.parameters(), strict=True):
                dst.copy_(src[idx])
        return out

    @staticmethod
    def concat(stacks: Sequence[ToyMLP]) -> ToyMLP:
        """One stack holding the models of several stacks of the same shape, in order."""
        first = stacks[0]
        out = ToyMLP(sum(s.n_models for s in stacks), first.hidden, first.n_aux)
        with torch.no_grad():
            for dst, *srcs in zip(out.parameters(), *(s.parameters() for s in stacks), strict=True):
                dst.copy_(torch.cat(list(srcs)))
        return out


def digit_logits(logits: torch.Tensor) -> torch.Tensor:
    return logits[..., :N_DIGITS]


def aux_logits(logits: torch.Tensor) -> torch.Tensor:
    return logits[..., N_DIGITS:]


def init_mlp(seeds: Sequence[int], config: ToyConfig) -> ToyMLP:
    """A stack of fresh MLPs, model ``i`` drawn from its own generator seeded with ``seeds[i]``:
    weights ~ N(0, 1/d_in), biases 0 (the paper's init). A seed gives the same weights whatever
    else is in the stack."""
    model = ToyMLP(len(seeds), config.hidden, config.n_aux)
    with torch.no_grad():
        for i, seed in enumerate(seeds):
            g = generator(seed)
            for w in model.weights:
                d_out, d_in = w.shape[1:]
                w[i] = torch.randn((d_out, d_in), generator=g) / d_in**0.5
    return model


def make_noise(n: int, kind: NoiseKind, seed: int) -> torch.Tensor:
    """[n, 64] noise images: uniform on [-1, 1] (the data's range, as in the paper) or N(0, 1)."""
    g = generator(seed)
    if kind == "uniform":
        return torch.rand((n, N_PIXELS), generator=g) * 2.0 - 1.0
    if kind == "gaussian":
        return torch.randn((n, N_PIXELS), generator=g)
    raise SublensError(f"noise must be 'uniform' or 'gaussian', got {kind!r}")


def aux_distill_loss(
    student_aux: torch.Tensor, teacher_aux: torch.Tensor, kind: LossKind = "kl"
) -> torch.Tensor:
    """Mean per-input loss between auxiliary logits of shape ``[..., n_aux]``.

    ``kl``: KL(softmax(teacher) || softmax(student)), the paper's distillation loss. All leading
    axes are flattened first, so ``batchmean`` divides by the number of inputs; a stacked model
    axis left in place would make it divide by the number of models. ``mse``: squared error of
    the raw logits, averaged over inputs and logits.
    """
    if student_aux.shape != teacher_aux.shape:
        raise ValueError(
            f"shape mismatch: {tuple(student_aux.shape)} vs {tuple(teacher_aux.shape)}"
        )
    s = student_aux.reshape(-1, student_aux.shape[-1])
    t = teacher_aux.reshape(-1, teacher_aux.shape[-1])
    if kind == "kl":
        return F.kl_div(
            F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="batchmean", log_target=True
        )
    if kind == "mse":
        return F.mse_loss(s, t)
    raise SublensError(f"loss must be 'kl' or 'mse', got {kind!r}")


def _epoch_orders(n: int, gens: Sequence[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.randperm(n, generator=g) for g in gens])


def _rows(rows: Sequence[int] | None, n_models: int) -> torch.Tensor:
    if rows is not None and len(rows) != n_models:
        raise ValueError(f"{len(rows)} data rows for {n_models} models")
    return torch.arange(n_models) if rows is None else torch.as_tensor(list(rows), dtype=torch.long)


def _generators(order_seeds: Sequence[int], n_models: int) -> list[torch.Generator]:
    if len(order_seeds) != n_models:
        raise ValueError(f"{len(order_seeds)} order seeds for {n_models} models")
    return [generator(s) for s in order_seeds]


def train_teacher(
    model: ToyMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    config: ToyConfig,
    order_seeds: Sequence[int],
    rows: Sequence[int] | None = None,
    on_epoch: Callable[[int, list[float]], None] | None = None,
) -> list[list[float]]:
    """Train every model of the stack in place with cross-entropy on its digit logits only (the
    auxiliary logits get no loss).

    `x` is ``[n_sets, n, 64]`` and `y` ``[n_sets, n]``: model ``m`` trains on set ``rows[m]``
    (default: set ``m``), in a batch order drawn from ``order_seeds[m]``. Returns each model's
    mean loss per epoch and calls `on_epoch(epoch, losses)` after each (for progress).
    """
    rows_t = _rows(rows, model.n_models)
    gens = _generators(order_seeds, rows_t.shape[0])
    opt = torch.optim.Adam(model.parameters(), lr=config.teacher_lr)
    history: list[list[float]] = []
    n, m = x.shape[1], model.n_models
    for _ in range(config.teacher_epochs):
        order = _epoch_orders(n, gens)
        total = torch.zeros(m)
        for start in range(0, n, config.teacher_batch):
            idx = order[:, start : start + config.teacher_batch]
            xb, yb = x[rows_t[:, None], idx], y[rows_t[:, None], idx]
            logits = digit_logits(model(xb))
            per_input = F.cross_entropy(
                logits.reshape(-1, N_DIGITS), yb.reshape(-1), reduction="none"
            )
            per_model = per_input.view(m, -1).mean(1)
            opt.zero_grad(set_to_none=True)
            per_model.sum().backward()  # sum of per-model means: each model's own gradient
            opt.step()
            total += per_model.detach() * idx.shape[1]
        history.append((total / n).tolist())
        if on_epoch is not None:
            on_epoch(len(history), history[-1])
    return history


@torch.no_grad()
def _aux_targets(
    teacher: ToyMLP, noise: torch.Tensor, rows: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    parts = [
        aux_logits(teacher(noise[rows, start : start + chunk]))
        for start in range(0, noise.shape[1], chunk)
    ]
    return torch.cat(parts, dim=1)


def distill_aux(
    student: ToyMLP,
    teacher: ToyMLP,
    noise: torch.Tensor,
    config: ToyConfig,
    order_seeds: Sequence[int],
    rows: Sequence[int] | None = None,
    on_epoch: Callable[[int, list[float]], None] | None = None,
) -> list[list[float]]:
    """Train student ``m`` in place to match teacher ``m``'s auxiliary logits on noise; nothing
    else (no digits, no labels, no digit logits) enters the loss.

    `noise` is ``[n_sets, n, 64]``; model ``m`` uses set ``rows[m]`` (default: set ``m``) in a
    batch order drawn from ``order_seeds[m]``. Returns each student's mean loss per epoch and
    calls `on_epoch(epoch, losses)` after each.
    """
    if student.n_models != teacher.n_models:
        raise ValueError(f"{student.n_models} students for {teacher.n_models} teachers")
    rows_t = _rows(rows, student.n_models)
    target = _aux_targets(teacher, noise, rows_t)
    gens = _generators(order_seeds, rows_t.shape[0])
    opt = torch.optim.Adam(student.parameters(), lr=config.distill_lr)
    history: list[list[float]] = []
    n, m = noise.shape[1], student.n_models
    model_axis = torch.arange(m)[:, None]
    for _ in range(config.distill_epochs):
        order = _epoch_orders(n, gens)
        total = torch.zeros(m)
        for start in range(0, n, config.distill_batch):
            idx = order[:, start : start + config.distill_batch]
            out = aux_logits(student(noise[rows_t[:, None], idx]))
            per_model = per_model_aux_loss(out, target[model_axis, idx], config.loss)
            opt.zero_grad(set_to_none=True)
            per_model.sum().backward()  # sum of per-model batchmeans: each model's own gradient
            opt.step()
            total += per_model.detach() * idx.shape[1]
        history.append((total / n).tolist())
        if on_epoch is not None:
            on_epoch(len(history), history[-1])
    return history


def per_model_aux_loss(out: torch.Tensor, target: torch.Tensor, kind: LossKind) -> torch.Tensor:
    """[n_models]: `aux_distill_loss` of each model's ``[batch, n_aux]`` slice of
    ``[n_models, batch, n_aux]`` logits, all models in one pass. Its sum is the stacked training
    loss (n_models × the flattened batchmean)."""
    m, b, a = out.shape
    if kind == "kl":
        lt = F.log_softmax(target, -1)
        per_input = (lt.exp() * (lt - F.log_softmax(out, -1))).sum(-1)
        return per_input.mean(1)
    if kind == "mse":
        return ((out - target) ** 2).reshape(m, b * a).mean(1)
    raise SublensError(f"loss must be 'kl' or 'mse', got {kind!r}")


@torch.no_grad()
def digit_accuracy(
    model: ToyMLP, x: torch.Tensor, y: torch.Tensor, rows: Sequence[int] | None = None
) -> list[float]:
    """Each model's share of test images whose argmax over the 10 digit logits is the label
    (chance: 0.1). `x` ``[n_sets, n, 64]``, `y` ``[n_sets, n]``; model ``m`` is scored on set
    ``rows[m]``."""
    rows_t = _rows(rows, model.n_models)
    pred = digit_logits(model(x[rows_t])).argmax(-1)
    return (pred == y[rows_t]).double().mean(1).tolist()


def run_experiment(
    seeds: Sequence[int],
    config: ToyConfig,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every condition for every seed; one dict per seed with test accuracies and final losses.

    Conditions (all scored on the seed's held-out digits with the 10 digit logits):

    - ``teacher``: trained on digits.
    - ``student_same_init``: the teacher's initial weights, distilled on the teacher's auxiliary
      logits over noise.
    - ``student_different_init``: the same from an independent init.
    - ``student_same_init_shuffled_teacher``: control. A second teacher from the same init
      trained on the same images with shuffled labels; the same-init student distilled on *its*
      auxiliary logits shows what a shared init plus a teacher that moved gives without digit
      knowledge to carry.
    - ``init_no_distillation``: the shared init itself. A student distilled from an *untrained*
      teacher of the same init would not move (its loss and gradient are exactly zero), so this
      is that control's accuracy too.

    Also reported: ``shuffled_teacher`` (the control's teacher) and
    ``other_init_no_distillation`` (the different-init student before distillation).
    """
    say = log or (lambda _msg: None)
    if not seeds:
        raise SublensError("seeds must list at least one seed")
    streams = [SeedStreams.from_seed(s) for s in seeds]
    n_seeds = len(seeds)
    splits = [load_digits_split(st.split, config.test_fraction) for st in streams]
    x_tr = torch.stack([s.x_train for s in splits])
    y_tr = torch.stack([s.y_train for s in splits])
    x_te = torch.stack([s.x_test for s in splits])
    y_te = torch.stack([s.y_test for s in splits])
    y_shuffled = torch.stack(
        [
            y[torch.randperm(y.shape[0], generator=generator(st.shuffled_labels))]
            for y, st in zip(y_tr, streams, strict=True)
        ]
    )
    own = list(range(n_seeds))

    init = init_mlp([st.init for st in streams], config)
    other = init_mlp([st.other_init for st in streams], config)
    acc_init = digit_accuracy(init, x_te, y_te)
    acc_other = digit_accuracy(other, x_te, y_te)

    def progress(stage: str, epochs: int) -> Callable[[int, list[float]], None]:
        def report(epoch: int, losses: list[float]) -> None:
            say(f"{stage}: epoch {epoch}/{epochs}, mean loss {float(np.mean(losses)):.4g}")

        return report

    teachers = init.select(own + own)
    teacher_hist = train_teacher(
        teachers,
        torch.cat([x_tr, x_tr]),
        torch.cat([y_tr, y_shuffled]),
        config,
        [st.teacher_order for st in streams] * 2,
        on_epoch=progress(f"{2 * n_seeds} teachers", config.teacher_epochs),
    )
    acc_teachers = digit_accuracy(teachers, x_te, y_te, own + own)

    students = ToyMLP.concat([init.select(own), other, init.select(own)])
    sources = teachers.select(own + own + [n_seeds + i for i in own])
    noise = torch.stack([make_noise(config.n_noise, config.noise, st.noise) for st in streams])
    distill_hist = distill_aux(
        students,
        sources,
        noise,
        config,
        [st.distill_order for st in streams] * 3,
        own * 3,
        on_epoch=progress(f"{3 * n_seeds} students", config.distill_epochs),
    )
    acc_students = digit_accuracy(students, x_te, y_te, own * 3)

    def last(hist: list[list[float]], i: int) -> float | None:
        return hist[-1][i] if hist else None

    results = []
    for i, seed in enumerate(seeds):
        results.append(
            {
                "seed": seed,
                "accuracy": {
                    "teacher": acc_teachers[i],
                    "student_same_init": acc_students[i],
                    "student_different_init": acc_students[n_seeds + i],
                    "student_same_init_shuffled_teacher": acc_students[2 * n_seeds + i],
                    "init_no_distillation": acc_init[i],
                    "other_init_no_distillation": acc_other[i],
                    "shuffled_teacher": acc_teachers[n_seeds + i],
                },
                "final_loss": {
                    "teacher_ce": last(teacher_hist, i),
                    "shuffled_teacher_ce": last(teacher_hist, n_seeds + i),
                    "student_same_init_distill": last(distill_hist, i),
                    "student_different_init_distill": last(distill_hist, n_seeds + i),
                    "student_same_init_shuffled_teacher_distill": last(
                        distill_hist, 2 * n_seeds + i
                    ),
                },
            }
        )
    return results

"""Linear probes for "is the trait prompt present?", trained on the teacher, applied to students.

A probe per layer separates activations of the *prompted* model (class 1, trait prompt in the
system message) from the *unprompted* one (class 0). Applied to a student's activations on
unprompted inputs, the share it classifies as "prompted" measures how much the student's
residual stream looks as if the trait prompt were there — over checkpoints, a curve that should
rise for the student and not for the control.

Model: scikit-learn ``StandardScaler`` → ``LogisticRegression`` (standardising makes the L2
penalty ``C`` act evenly on every feature). Quality is reported on a seeded, stratified held-out
split (AUROC with `sklearn.metrics.roc_auc_score`, and accuracy); the probe kept is the one fitted
on the training part, so the held-out numbers describe it exactly. Scoring afterwards uses the
stored arrays (scaler mean and scale, weights, intercept) in numpy, so a saved probe needs no
pickle.

`Probe.direction()` maps the weights back to raw activation coordinates (``w / scale``: the
gradient of the probe's logit with respect to the activation), so it can be compared with
`v_teacher` by a cosine.

Rows are the unit of the split and of the bootstrap: give one row per prompt (`last` or `mean`
positions). With token rows (`all`), tokens of one prompt can land on both sides of the split
and the held-out AUROC is optimistic; `probe_curve` does average token rows per prompt first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from interp.core.caching import ActivationCache
from interp.core.errors import SublensError
from interp.core.io import atomic_path, read_json, write_json
from interp.measure.stats import mean_ci

FORMAT = "sublens-probes"
FORMAT_VERSION = 1
TENSOR_FILE = "probes.safetensors"
META_FILE = "probes.json"
MIN_ROWS_PER_CLASS = 2

Acts = torch.Tensor | np.ndarray | ActivationCache


def _as_rows(
    acts: Acts, layers: Sequence[int] | int | None, name: str
) -> tuple[np.ndarray, list[int], np.ndarray | None]:
    """(float64 [n, L, d], layer indices of axis 1, offsets or None)."""
    offsets = None
    if isinstance(acts, ActivationCache):
        if layers is None:
            layers = acts.meta.get("layers")
        offsets = None if acts.offsets is None else acts.offsets.numpy()
        acts = acts.activations
    arr = torch.as_tensor(acts).detach().to("cpu", torch.float64).numpy()
    if isinstance(layers, int):
        layers = [layers]
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3:
        raise SublensError(
            f"{name} activations have shape {tuple(arr.shape)}: expected [n, n_layers, d_model] "
            "or [n, d_model]"
        )
    if layers is None:
        raise SublensError(f"{name}: pass `layers`, the layer index of each slice along axis 1")
    layers = [int(x) for x in layers]
    if len(layers) != arr.shape[1]:
        raise SublensError(
            f"{name} activations hold {arr.shape[1]} layers but {len(layers)} layer indices "
            f"were given ({layers}): give one per slice along axis 1"
        )
    if not np.isfinite(arr).all():
        raise SublensError(f"{name} activations contain NaN or inf: recache them")
    return arr, layers, offsets


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


@dataclass(eq=False)
class Probe:
    """A logistic-regression probe at one layer: scaler and weights as arrays, plus its metrics."""

    layer: int
    mean: np.ndarray  # scaler mean [d]
    scale: np.ndarray  # scaler scale [d]
    coef: np.ndarray  # weights on standardised features [d]
    intercept: float
    auroc: float  # held-out
    test_accuracy: float
    train_accuracy: float
    n_train: int
    n_test: int
    seed: int
    C: float
    source_layers: list[int] = field(default_factory=list)  # axis-1 layers it was trained on
    pipeline: Any = field(default=None, repr=False)  # the sklearn Pipeline (None after load)

    @property
    def d_model(self) -> int:
        return int(self.coef.shape[0])

    def _matrix(self, acts: Acts, layers: Sequence[int] | int | None = None) -> np.ndarray:
        if isinstance(acts, ActivationCache):
            return acts.layer(self.layer).double().numpy()
        arr = torch.as_tensor(acts).detach().to("cpu", torch.float64).numpy()
        if arr.ndim == 3:
            names = self.source_layers if layers is None else layers
            names = [names] if isinstance(names, int) else list(names)
            if len(names) != arr.shape[1] or self.layer not in names:
                raise SublensError(
                    f"cannot find layer {self.layer} in activations with {arr.shape[1]} layers "
                    f"(layer indices {names}): pass `layers` naming each slice along axis 1"
                )
            arr = arr[:, names.index(self.layer)]
        if arr.ndim != 2 or arr.shape[1] != self.d_model:
            raise SublensError(
                f"the probe at layer {self.layer} expects [n, {self.d_model}] activations, got "
                f"{tuple(arr.shape)}: use activations of the same model"
            )
        return arr

    def logits(self, acts: Acts, layers: Sequence[int] | int | None = None) -> np.ndarray:
        """The probe's log-odds of "prompted" per row."""
        x = self._matrix(acts, layers)
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def scores(self, acts: Acts, layers: Sequence[int] | int | None = None) -> np.ndarray:
        """P(prompted) per row (= the pipeline's ``predict_proba[:, 1]``)."""
        return _sigmoid(self.logits(acts, layers))

    def predict(self, acts: Acts, layers: Sequence[int] | int | None = None) -> np.ndarray:
        """1 where classified "prompted" (log-odds > 0, as sklearn's ``predict``), else 0."""
        return (self.logits(acts, layers) > 0).astype(np.int64)

    def predict_share(self, acts: Acts, layers: Sequence[int] | int | None = None) -> float:
        """The share of rows classified "prompted"."""
        return float(self.predict(acts, layers).mean())

    def direction(self, normalize: bool = False) -> torch.Tensor:
        """The weight vector in raw activation coordinates, ``coef / scale`` (float32 [d]):
        the probe's logit grows fastest along it. Unit length with ``normalize``."""
        w = self.coef / self.scale
        if normalize:
            w = w / np.linalg.norm(w)
        return torch.from_numpy(w).float()

    def describe(self) -> dict[str, Any]:
        """Metrics and settings for results files."""
        return {
            "layer": self.layer,
            "auroc": self.auroc,
            "test_accuracy": self.test_accuracy,
            "train_accuracy": self.train_accuracy,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "seed": self.seed,
            "C": self.C,
            "d_model": self.d_model,
            "intercept": self.intercept,
            "source_layers": self.source_layers,
        }


def train_probe(
    pos_acts: Acts,
    neg_acts: Acts,
    layers: Sequence[int] | int | None = None,
    seed: int = 0,
    test_size: float = 0.25,
    C: float = 1.0,
    max_iter: int = 2000,
) -> dict[int, Probe]:
    """One probe per layer separating `pos_acts` (prompted, class 1) from `neg_acts` (class 0).

    Activations are [n, n_layers, d] with `layers` naming axis 1 (an `ActivationCache` carries
    them), or [n, d] with `layers` one index. Same seed and data → the same probes.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 0.0 < test_size < 1.0:
        raise SublensError(f"test_size must be in (0, 1), got {test_size}")
    if not C > 0:
        raise SublensError(f"C (inverse regularisation strength) must be positive, got {C}")
    pos, pos_layers, _ = _as_rows(pos_acts, layers, "prompted (positive)")
    neg, neg_layers, _ = _as_rows(neg_acts, layers, "unprompted (negative)")
    if pos_layers != neg_layers:
        raise SublensError(
            f"prompted and unprompted activations hold different layers ({pos_layers} vs "
            f"{neg_layers}): cache both at the same layers"
        )
    for arr, what in ((pos, "prompted"), (neg, "unprompted")):
        if arr.shape[0] < MIN_ROWS_PER_CLASS:
            raise SublensError(
                f"the probe needs both classes, with at least {MIN_ROWS_PER_CLASS} {what} rows "
                f"(got {arr.shape[0]}): cache more {what} prompts"
            )
    if pos.shape[2] != neg.shape[2]:
        raise SublensError(
            f"prompted and unprompted activations differ in d_model ({pos.shape[2]} vs "
            f"{neg.shape[2]}): use activations of the same model"
        )
    n = pos.shape[0] + neg.shape[0]
    n_test = math.ceil(test_size * n)
    if n_test < 2 or n - n_test < 2:
        raise SublensError(
            f"{n} rows cannot be split into train and test sets that each hold both classes "
            f"(test_size {test_size}): give more rows or another test_size"
        )
    y = np.r_[np.ones(pos.shape[0], dtype=np.int64), np.zeros(neg.shape[0], dtype=np.int64)]
    try:
        idx_train, idx_test = train_test_split(
            np.arange(n), test_size=test_size, random_state=seed, stratify=y
        )
    except ValueError as err:
        raise SublensError(
            f"cannot split {pos.shape[0]} prompted and {neg.shape[0]} unprompted rows into "
            f"stratified train/test sets ({err}): give more rows of the smaller class"
        ) from err
    if len(set(y[idx_test])) < 2 or len(set(y[idx_train])) < 2:
        raise SublensError(
            f"the held-out split of {pos.shape[0]} prompted and {neg.shape[0]} unprompted rows "
            "lacks one class: give more rows of the smaller class or a larger test_size"
        )
    probes = {}
    for k, layer in enumerate(pos_layers):
        x = np.concatenate([pos[:, k], neg[:, k]])
        pipe = make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
        )
        pipe.fit(x[idx_train], y[idx_train])
        scaler, clf = pipe[0], pipe[-1]
        p_test = pipe.predict_proba(x[idx_test])[:, 1]
        probes[layer] = Probe(
            layer=layer,
            mean=scaler.mean_.copy(),
            scale=scaler.scale_.copy(),
            coef=clf.coef_[0].copy(),
            intercept=float(clf.intercept_[0]),
            auroc=float(roc_auc_score(y[idx_test], p_test)),
            test_accuracy=float(pipe.score(x[idx_test], y[idx_test])),
            train_accuracy=float(pipe.score(x[idx_train], y[idx_train])),
            n_train=len(idx_train),
            n_test=len(idx_test),
            seed=seed,
            C=float(C),
            source_layers=list(pos_layers),
            pipeline=pipe,
        )
    return probes


class CurvePoint(NamedTuple):
    """The probe's "prompted" share at one checkpoint, with a bootstrap CI over prompts."""

    step: int
    share: float
    ci_low: float
    ci_high: float
    n_prompts: int


def _per_prompt_shares(probe: Probe, acts: Acts, layers: Sequence[int] | int | None) -> np.ndarray:
    """Per prompt, the share of its rows classified "prompted" (one row per prompt: 0 or 1)."""
    pred = probe.predict(acts, layers).astype(np.float64)
    offsets = getattr(acts, "offsets", None) if isinstance(acts, ActivationCache) else None
    if offsets is None:
        return pred
    off = offsets.numpy()
    return np.add.reduceat(pred, off[:-1]) / np.diff(off)


def probe_curve(
    probes: Mapping[int, Probe],
    acts_by_step: Mapping[int, Acts],
    layers: Sequence[int] | int | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[int, list[CurvePoint]]:
    """Per probe layer, the share classified "prompted" at each step (sorted by step).

    The share is the mean over prompts (a token cache's rows are averaged per prompt first);
    its CI resamples prompts (`interp.measure.stats.mean_ci`, the same seed at every step).
    """
    if not probes:
        raise SublensError("no probes given: train them first with train_probe")
    if not acts_by_step:
        raise SublensError("no checkpoints given: pass activations per training step")
    curves: dict[int, list[CurvePoint]] = {layer: [] for layer in sorted(probes)}
    for step in sorted(acts_by_step):
        acts = acts_by_step[step]
        for layer in curves:
            shares = _per_prompt_shares(probes[layer], acts, layers)
            if shares.size == 0:
                raise SublensError(f"no activations at step {step}: cache at least one prompt")
            mean, lo, hi = mean_ci(shares, n_boot=n_boot, level=level, seed=seed)
            curves[layer].append(CurvePoint(int(step), mean, lo, hi, int(shares.size)))
    return curves


# --- save / load -----------------------------------------------------------------------------


def save_probes(probes: Mapping[int, Probe], path: str | Path) -> Path:
    """Write `probes.safetensors` (arrays) then `probes.json` (metrics) into directory `path`."""
    from safetensors.numpy import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for layer, p in probes.items():
        for name in ("mean", "scale", "coef"):
            tensors[f"layer.{layer}.{name}"] = np.ascontiguousarray(getattr(p, name), np.float64)
    with atomic_path(out / TENSOR_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    write_json(
        out / META_FILE,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "probes": [probes[layer].describe() for layer in sorted(probes)],
        },
    )
    return out


def load_probes(path: str | Path) -> dict[int, Probe]:
    """Probes written by `save_probes` (without their sklearn pipelines)."""
    from safetensors.numpy import load_file

    path = Path(path)
    meta_path, tensor_path = path / META_FILE, path / TENSOR_FILE
    if not meta_path.exists() or not tensor_path.exists():
        raise SublensError(
            f"{str(path)!r} holds no saved probes (needs {META_FILE} and {TENSOR_FILE}): "
            "save them with save_probes first"
        )
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise SublensError(f"{str(meta_path)!r} is not a sublens probes file")
    arrays = load_file(str(tensor_path))
    probes = {}
    for m in meta["probes"]:
        layer = int(m["layer"])
        try:
            mean, scale, coef = (arrays[f"layer.{layer}.{k}"] for k in ("mean", "scale", "coef"))
        except KeyError as err:
            raise SublensError(f"{str(tensor_path)!r} lacks the arrays of layer {layer}") from err
        probes[layer] = Probe(
            layer=layer,
            mean=mean,
            scale=scale,
            coef=coef,
            intercept=float(m["intercept"]),
            auroc=float(m["auroc"]),
            test_accuracy=float(m["test_accuracy"]),
            train_accuracy=float(m["train_accuracy"]),
            n_train=int(m["n_train"]),
            n_test=int(m["n_test"]),
            seed=int(m["seed"]),
            C=float(m["C"]),
            source_layers=[int(x) for x in m["source_layers"]],
        )
    return probes

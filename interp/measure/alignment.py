"""Activation drift of a student and its alignment with the teacher's steering vector.

`v_student` (DESIGN.md) is the mean activation of a student checkpoint minus the mean activation
of the base model on the *same* prompts, per layer. If the student distils a steering vector,
that drift should point along `v_teacher`: its cosine with `v_teacher` rises during training, and
not for the control student.

Inputs are activations as `interp.core.caching` stores them, either as tensors or as loaded
`ActivationCache` objects:

- one row per prompt ([n_prompts, n_layers, d_model], positions `last` or `mean`), or
- one row per token ([n_tokens, n_layers, d_model]) with `offsets` [n_prompts + 1] (prompt i
  owns rows offsets[i]:offsets[i+1]; positions `all`, `user`, ...).

Everything is reduced first to a `PromptDrift`: per prompt, the mean over its rows of
student − base, plus a weight per prompt. Base and student share the tokenizer and the
prompts, so their rows pair one to one. ``weighting="token"`` (the default) weights a prompt by
its number of rows, so the drift is the plain mean over all token rows — Blank et al.'s
"student minus base over all prompt tokens"; ``weighting="prompt"`` gives each prompt the same
weight (long prompts do not dominate). With one row per prompt both are the same.

Confidence intervals resample *prompts* (rows of one prompt are not independent), with the same
prompt indices for base and student (a paired bootstrap, as in `measure.stats`): the cosine is a
nonlinear function of the mean drift, so it is recomputed on each resample.

Null distributions say how large a cosine is by chance: in d dimensions a random direction has
cosine ~ N(0, 1/d) with a fixed vector (exactly: cos² ~ Beta(1/2, (d-1)/2)), so |cos| above
≈ 1.96/sqrt(d) is unlikely at the 5% level. Residual-stream directions are not isotropic: a few
directions carry most of the variance, and a vector along one of them meets random *activation*
directions far more often, so `covariance_cosine_null` draws directions from a Gaussian with the
activations' own (Ledoit–Wolf shrunk) covariance. Cosines of the drift with the vectors of
*unrelated* trait prompts (`unrelated_trait_prompts`, at least 19 of them so that p can reach
0.05) give an empirical null that includes whatever generic direction fine-tuning moves
activations along. Every p comes with its smallest attainable value (`NullTest.min_p`).

Comparing two drifts (student vs control, `compare_drifts`) uses projections on v̂: the raw
cosine shrinks with each drift's own noise (a noisier student with the same true direction would
look less aligned), the projection does not, and it is linear in the mean drift, so its paired
bootstrap interval is a plain one. The noise-corrected cosines come along as points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from interp.core.caching import ActivationCache
from interp.core.errors import SublensError
from interp.measure.stats import percentile_interval, resample_indices
from interp.measure.verdicts import min_attainable_p

WEIGHTINGS = ("token", "prompt")
ALTERNATIVES = ("two-sided", "greater", "less")

Acts = torch.Tensor | np.ndarray | ActivationCache
Vectors = Mapping[int, torch.Tensor] | Any  # a dict layer -> [d], or a SteeringVector


# --- inputs ----------------------------------------------------------------------------------


def _vectors(v: Vectors, name: str = "vector") -> dict[int, torch.Tensor]:
    """layer -> float64 [d] from a SteeringVector (its `.vectors`) or a mapping."""
    raw = getattr(v, "vectors", v)
    if not isinstance(raw, Mapping) or not raw:
        raise SublensError(f"the {name} must be a SteeringVector or a non-empty dict layer -> [d]")
    out = {}
    for layer, vec in raw.items():
        t = torch.as_tensor(vec).detach().to("cpu", torch.float64)
        if t.ndim != 1:
            raise SublensError(f"the {name} at layer {layer} has shape {tuple(t.shape)}, not [d]")
        out[int(layer)] = t
    return out


@dataclass
class _Rows:
    acts: torch.Tensor  # [n_rows, n_layers, d] float64
    layers: list[int]
    offsets: torch.Tensor | None  # [n_prompts + 1] or None (one row per prompt)
    meta: dict[str, Any]


def _rows(acts: Acts, layers: Sequence[int] | int | None, offsets: Any, name: str) -> _Rows:
    meta: dict[str, Any] = {}
    if isinstance(layers, int):
        layers = [layers]
    if isinstance(acts, ActivationCache):
        meta = acts.meta
        if layers is None:
            layers = meta.get("layers")
        if offsets is None:
            offsets = acts.offsets
        acts = acts.activations
    t = torch.as_tensor(acts).detach().to("cpu", torch.float64)
    if t.ndim == 2:
        t = t[:, None, :]
    if t.ndim != 3:
        raise SublensError(
            f"{name} activations have shape {tuple(t.shape)}: expected [n, n_layers, d_model] "
            "(or [n, d_model] for one layer)"
        )
    if layers is None:
        if t.shape[1] != 1:
            raise SublensError(
                f"{name} activations hold {t.shape[1]} layers: pass `layers` (the layer index of "
                "each slice along axis 1)"
            )
        raise SublensError(f"{name} activations hold one layer: pass `layers=[that layer]`")
    layers = [int(x) for x in layers]
    if len(layers) != t.shape[1]:
        raise SublensError(
            f"{name} activations hold {t.shape[1]} layers but {len(layers)} layer indices were "
            f"given ({layers}): give one index per slice along axis 1"
        )
    off = None
    if offsets is not None:
        off = torch.as_tensor(offsets).to("cpu", torch.long)
        if off.ndim != 1 or off.numel() < 2 or int(off[0]) != 0 or int(off[-1]) != t.shape[0]:
            raise SublensError(
                f"{name} offsets must run from 0 to the number of rows ({t.shape[0]}): "
                "pass the cache's `offsets` unchanged"
            )
        if bool((off[1:] <= off[:-1]).any()):
            raise SublensError(f"{name} offsets give a prompt no rows: recache the prompts")
    return _Rows(t, layers, off, meta)


def _check_pair(base: _Rows, student: _Rows) -> None:
    """Base and student must be the same prompts, rows and layers; say which part differs."""
    if base.acts.shape[2] != student.acts.shape[2]:
        raise SublensError(
            f"base and student activations have different d_model ({base.acts.shape[2]} vs "
            f"{student.acts.shape[2]}): compare checkpoints of the same model"
        )
    if base.layers != student.layers:
        raise SublensError(
            f"base and student activations hold different layers ({base.layers} vs "
            f"{student.layers}): cache both at the same layers"
        )
    if (base.offsets is None) != (student.offsets is None):
        raise SublensError(
            "one of base/student holds one row per prompt and the other one row per token: "
            "cache both with the same --positions"
        )
    if base.acts.shape[0] != student.acts.shape[0]:
        unit = "prompts" if base.offsets is None else "token rows"
        raise SublensError(
            f"base has {base.acts.shape[0]} {unit} and student {student.acts.shape[0]}: "
            "cache both on the same prompts with the same --positions"
        )
    if base.offsets is not None and not torch.equal(base.offsets, student.offsets):
        raise SublensError(
            "base and student split their token rows into prompts differently (offsets "
            "differ): cache both on the same prompts with the same tokenizer"
        )
    for key in ("positions", "system_prompt"):
        if key in base.meta and key in student.meta and base.meta[key] != student.meta[key]:
            raise SublensError(
                f"base and student caches differ in {key} ({base.meta[key]!r} vs "
                f"{student.meta[key]!r}): cache both the same way"
            )
    sha_b = base.meta.get("prompts", {}).get("sha256")
    sha_s = student.meta.get("prompts", {}).get("sha256")
    if sha_b is not None and sha_s is not None and sha_b != sha_s:
        raise SublensError(
            "base and student caches were computed on different prompts (prompt hashes "
            "differ): cache both on the same prompt set, in the same order"
        )


# --- drift -----------------------------------------------------------------------------------


@dataclass
class PromptDrift:
    """Per-prompt drift: the mean over each prompt's rows of student − base, and its weight.

    ``diffs`` [n_prompts, n_layers, d] (float64), ``weights`` [n_prompts] (rows per prompt for
    token weighting, ones for prompt weighting). The drift is ``Σ w_i diffs_i / Σ w_i``.
    """

    diffs: torch.Tensor
    weights: torch.Tensor
    layers: list[int]
    weighting: str

    @property
    def n_prompts(self) -> int:
        return int(self.diffs.shape[0])

    def mean(self) -> dict[int, torch.Tensor]:
        """layer -> drift [d] (float32)."""
        w = self.weights / self.weights.sum()
        mean = torch.einsum("n,nld->ld", w, self.diffs)
        return {layer: mean[k].float() for k, layer in enumerate(self.layers)}

    def layer(self, layer: int) -> torch.Tensor:
        if layer not in self.layers:
            raise SublensError(f"no drift at layer {layer}: the activations hold {self.layers}")
        return self.diffs[:, self.layers.index(layer)]


def prompt_drift(
    base: Acts,
    student: Acts,
    layers: Sequence[int] | int | None = None,
    *,
    offsets: Any = None,
    weighting: str = "token",
) -> PromptDrift:
    """Per-prompt student − base differences of mean activations (see `PromptDrift`).

    `base` and `student` are [n, n_layers, d] tensors (or [n, d] with one layer) or
    `ActivationCache`s, on the same prompts in the same order. `layers` names the slices along
    axis 1 (caches carry it). `offsets` marks token rows per prompt (caches carry it); without
    it each row is one prompt.
    """
    if weighting not in WEIGHTINGS:
        raise SublensError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
    b = _rows(base, layers, offsets, "base")
    s = _rows(student, layers, offsets, "student")
    _check_pair(b, s)
    diff = s.acts - b.acts
    if b.offsets is None:
        n = diff.shape[0]
        if n == 0:
            raise SublensError("no prompts in the activations: cache at least one prompt")
        return PromptDrift(diff, torch.ones(n, dtype=torch.float64), b.layers, weighting)
    counts = (b.offsets[1:] - b.offsets[:-1]).to(torch.float64)
    owner = torch.repeat_interleave(torch.arange(counts.numel()), counts.long())
    sums = torch.zeros((counts.numel(), *diff.shape[1:]), dtype=torch.float64)
    sums.index_add_(0, owner, diff)
    means = sums / counts[:, None, None]
    weights = counts if weighting == "token" else torch.ones_like(counts)
    return PromptDrift(means, weights, b.layers, weighting)


def drift_vectors(
    base: Acts,
    student: Acts,
    layers: Sequence[int] | int | None = None,
    *,
    offsets: Any = None,
    weighting: str = "token",
) -> dict[int, torch.Tensor]:
    """`v_student` per layer: mean(student) − mean(base) over the same prompts (float32 [d])."""
    return prompt_drift(base, student, layers, offsets=offsets, weighting=weighting).mean()


# --- alignment -------------------------------------------------------------------------------


@dataclass
class Alignment:
    """cos(drift, v), the signed length of the drift along v̂, and both norms, at one layer."""

    layer: int
    cosine: float
    projection: float
    drift_norm: float
    vector_norm: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shared_layers(a: Mapping[int, Any], b: Mapping[int, Any]) -> list[int]:
    shared = sorted(set(a) & set(b))
    if not shared:
        raise SublensError(
            f"the drift and the vector share no layer (layers {sorted(a)} vs {sorted(b)}): "
            "compute both at the same layers"
        )
    return shared


def _unit(v: torch.Tensor, layer: int) -> torch.Tensor:
    norm = float(v.norm())
    if norm == 0.0 or not math.isfinite(norm):
        raise SublensError(f"the steering vector at layer {layer} is zero: it has no direction")
    return v / norm


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(a @ b) / (na * nb)


def alignment(drift: Vectors, v_teacher: Vectors) -> dict[int, Alignment]:
    """Per shared layer: cos(drift, v_teacher) and the projection drift · v̂_teacher.

    The projection keeps the drift's scale (in activation units), the cosine does not; a zero
    drift has cosine NaN.
    """
    d, v = _vectors(drift, "drift"), _vectors(v_teacher, "steering vector")
    out = {}
    for layer in _shared_layers(d, v):
        if d[layer].shape != v[layer].shape:
            raise SublensError(
                f"drift and vector differ in size at layer {layer} ({d[layer].numel()} vs "
                f"{v[layer].numel()}): compare vectors of the same model"
            )
        unit = _unit(v[layer], layer)
        out[layer] = Alignment(
            layer=layer,
            cosine=_cosine(d[layer], v[layer]),
            projection=float(d[layer] @ unit),
            drift_norm=float(d[layer].norm()),
            vector_norm=float(v[layer].norm()),
        )
    return out


def cosine_matrix(a: Vectors, b: Vectors) -> tuple[list[int], list[int], np.ndarray]:
    """cos(a[i], b[j]) for every layer pair: a layer profile (does the drift at layer i follow
    the teacher vector of a *different* layer?). Returns (layers of a, layers of b, matrix)."""
    va, vb = _vectors(a, "first vector"), _vectors(b, "second vector")
    la, lb = sorted(va), sorted(vb)
    mat = np.array([[_cosine(va[i], vb[j]) for j in lb] for i in la], dtype=np.float64)
    return la, lb, mat


@dataclass
class AlignmentCI:
    """Alignment at one layer with percentile bootstrap intervals over prompts.

    The cosine of a *noisy* mean drift is biased towards 0: prompt-to-prompt noise adds length
    orthogonal to v, about ``noise_norm`` (the standard error of the mean drift, as a length:
    ``sqrt(Σ w_i² |d_i − d̄|²) / Σ w_i``). Resampling adds that noise once more, so the
    percentile interval sits lower still (it can exclude the point estimate when the drift is
    not much longer than ``noise_norm``): conservative for "aligned above the null", not an
    unbiased interval for the population cosine. ``cosine_corrected`` =
    ``projection / sqrt(max(|d̄|² − noise_norm², projection²))`` removes the expected noise
    length (the projection itself is unbiased); compare ``drift_norm`` with ``noise_norm``
    before reading much into either cosine.
    """

    layer: int
    cosine: float
    ci_low: float
    ci_high: float
    projection: float
    projection_ci_low: float
    projection_ci_high: float
    drift_norm: float
    noise_norm: float
    cosine_corrected: float
    n_prompts: int
    weighting: str
    n_boot: int
    level: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def noise_norm(diffs: np.ndarray, weights: np.ndarray) -> float:
    """The standard error of the weighted mean drift, as a length:
    ``sqrt(Σ w_i² |d_i − d̄|²) / Σ w_i`` (`diffs` [n, d], `weights` [n])."""
    w = np.asarray(weights, dtype=np.float64)
    x = np.asarray(diffs, dtype=np.float64)
    mean = w @ x / w.sum()
    return float(np.sqrt((w**2 * ((x - mean) ** 2).sum(axis=1)).sum()) / w.sum())


def corrected_cosine(projection: float, drift_norm: float, noise: float) -> float:
    """``projection / sqrt(max(|d̄|² − noise², projection²))``: the cosine with the expected
    noise length removed from the drift's norm (the projection itself is unbiased)."""
    signal2 = max(drift_norm**2 - noise**2, projection**2)
    return projection / math.sqrt(signal2) if signal2 > 0 else float("nan")


def resample_weights(weights: torch.Tensor, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n]: how often each prompt is drawn in each resample, times its weight.

    Uses `measure.stats.resample_indices`, so a seed draws the same prompts as `paired_bootstrap`.
    """
    n = weights.numel()
    idx = resample_indices(n, n_boot, seed)
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n * n_boot).reshape(n_boot, n).astype(np.float64)
    return counts * weights.numpy()[None, :]


def alignment_ci(
    pd: PromptDrift,
    layer: int,
    cos: float,
    proj: float,
    drift_norm: float,
    unit: np.ndarray,
    boot_w: np.ndarray | None,
    n_boot: int,
    level: float,
    seed: int,
) -> tuple[AlignmentCI, np.ndarray]:
    """An `AlignmentCI` from a drift's point cosine / projection / norm (computed by the caller in
    its own precision) and resampled prompt weights `boot_w` (None: one prompt, no interval);
    also the bootstrap cosines, for comparisons that pair them."""
    w = pd.weights.numpy()
    diffs = pd.layer(layer).numpy()
    noise = noise_norm(diffs, w)
    if boot_w is None:
        coss = np.array([cos])
        cos_ci, proj_ci = (cos, cos), (proj, proj)
    else:
        means = (boot_w @ diffs) / boot_w.sum(axis=1, keepdims=True)  # [n_boot, d]
        projs = means @ unit
        with np.errstate(divide="ignore", invalid="ignore"):
            coss = projs / np.linalg.norm(means, axis=1)
        cos_ci, proj_ci = percentile_interval(coss, level), percentile_interval(projs, level)
    ci = AlignmentCI(
        layer=layer,
        cosine=cos,
        ci_low=cos_ci[0],
        ci_high=cos_ci[1],
        projection=proj,
        projection_ci_low=proj_ci[0],
        projection_ci_high=proj_ci[1],
        drift_norm=drift_norm,
        noise_norm=noise,
        cosine_corrected=corrected_cosine(proj, drift_norm, noise),
        n_prompts=pd.n_prompts,
        weighting=pd.weighting,
        n_boot=n_boot,
        level=level,
        seed=seed,
    )
    return ci, coss


def bootstrap_alignment(
    base: Acts,
    student: Acts,
    v_teacher: Vectors,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    *,
    layers: Sequence[int] | int | None = None,
    offsets: Any = None,
    weighting: str = "token",
) -> dict[int, AlignmentCI]:
    """Alignment of the student's drift with `v_teacher`, with CIs from resampling prompts.

    Paired: every resample draws the same prompt indices for base and student (their
    difference is resampled). Layers are those of the activations that `v_teacher` also has.
    """
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise SublensError(f"need 0 < level < 1 and n_boot >= 1 (got {level}, {n_boot})")
    pd = prompt_drift(base, student, layers, offsets=offsets, weighting=weighting)
    vecs = _vectors(v_teacher, "steering vector")
    shared = _shared_layers(dict.fromkeys(pd.layers), vecs)
    w = pd.weights
    point = pd.mean()
    boot_w = resample_weights(w, n_boot, seed) if pd.n_prompts > 1 else None
    out = {}
    for layer in shared:
        v = vecs[layer]
        if v.numel() != pd.diffs.shape[2]:
            raise SublensError(
                f"the steering vector has d={v.numel()} at layer {layer} but the activations "
                f"d={pd.diffs.shape[2]}: use a vector of the same model"
            )
        unit = _unit(v, layer).numpy()
        drift = point[layer].double()
        cos, proj = _cosine(drift, v), float(drift @ torch.from_numpy(unit))
        out[layer], _ = alignment_ci(
            pd, layer, cos, proj, float(drift.norm()), unit, boot_w, n_boot, level, seed
        )
    return out


@dataclass
class DriftComparison:
    """Drift `a` against drift `b` (student against control) along v̂ at one layer.

    ``diff`` = projection(a) − projection(b), with a paired percentile interval over prompts
    (both drifts are resampled with the same prompts): how much further `a` moved along v̂ than
    `b`, in activation units. The projection is unbiased whatever each drift's noise, so a noisy
    `a` with the same true drift as a clean `b` gives a difference around 0; the raw cosine would
    shrink with the noise. ``cosine_corrected_*`` are the noise-corrected cosines (points: their
    bootstrap is not reliable once the noise is as long as the drift).
    """

    layer: int
    diff: float
    ci_low: float
    ci_high: float
    projection_a: float
    projection_b: float
    cosine_a: float
    cosine_b: float
    cosine_corrected_a: float
    cosine_corrected_b: float
    cosine_corrected_diff: float
    noise_norm_a: float
    noise_norm_b: float
    n_prompts: int
    n_boot: int
    level: float
    seed: int
    measure: str = "projection"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _layer_stats(diffs: np.ndarray, w: np.ndarray, unit: np.ndarray) -> tuple[float, ...]:
    """(projection, cosine, noise-corrected cosine, noise length) of a weighted mean drift."""
    drift = w @ diffs / w.sum()
    dn = float(np.linalg.norm(drift))
    proj = float(drift @ unit)
    noise = noise_norm(diffs, w)
    cos = proj / dn if dn > 0 else float("nan")
    return proj, cos, corrected_cosine(proj, dn, noise), noise


def compare_drifts(
    a: PromptDrift,
    b: PromptDrift,
    v: torch.Tensor | np.ndarray,
    layer: int,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> DriftComparison:
    """How much further drift `a` moved along v̂ than drift `b` (paired over prompts).

    `a` and `b` are drifts of two models from the same base on the same prompts (same weights).
    """
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise SublensError(f"need 0 < level < 1 and n_boot >= 1 (got {level}, {n_boot})")
    if a.n_prompts != b.n_prompts or not torch.equal(a.weights, b.weights):
        raise SublensError(
            "the two drifts were computed on different prompts (or weights): compare drifts "
            "of the same prompt set"
        )
    vv = torch.as_tensor(v).detach().to("cpu", torch.float64).numpy()
    da, db = a.layer(layer).numpy(), b.layer(layer).numpy()
    if vv.shape != (da.shape[1],):
        raise SublensError(
            f"the vector has shape {vv.shape} at layer {layer} but the drifts d={da.shape[1]}: "
            "use a vector of the same model"
        )
    unit = _unit(torch.from_numpy(vv), layer).numpy()
    w = a.weights.numpy()
    pa, ca, cca, na = _layer_stats(da, w, unit)
    pb, cb, ccb, nb = _layer_stats(db, w, unit)
    if a.n_prompts > 1:
        bw = resample_weights(a.weights, n_boot, seed)
        reps = (bw @ ((da - db) @ unit)) / bw.sum(axis=1)
        lo, hi = percentile_interval(reps, level)
    else:
        lo = hi = pa - pb
    return DriftComparison(
        layer=layer,
        diff=pa - pb,
        ci_low=lo,
        ci_high=hi,
        projection_a=pa,
        projection_b=pb,
        cosine_a=ca,
        cosine_b=cb,
        cosine_corrected_a=cca,
        cosine_corrected_b=ccb,
        cosine_corrected_diff=cca - ccb,
        noise_norm_a=na,
        noise_norm_b=nb,
        n_prompts=a.n_prompts,
        n_boot=n_boot,
        level=level,
        seed=seed,
    )


# --- nulls -----------------------------------------------------------------------------------


@dataclass
class CosineNull:
    """Cosines expected without alignment: `samples`, and for random directions the bounds.

    ``analytic_bound`` is z/sqrt(d) (the normal approximation, ≈ 1.96/sqrt(d) at 95%) and
    ``exact_bound`` the two-sided quantile of |cos| from cos² ~ Beta(1/2, (d-1)/2); both are
    None for an empirical null of other vectors.
    """

    samples: np.ndarray
    kind: str
    level: float
    d_model: int | None = None
    analytic_bound: float | None = None
    exact_bound: float | None = None
    shrinkage: float | None = None  # the covariance null's shrinkage towards (tr Σ / d) I

    @property
    def empirical_bound(self) -> float:
        """The `level` quantile of |cos| over the samples."""
        return float(np.quantile(np.abs(self.samples), self.level))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "level": self.level,
            "d_model": self.d_model,
            "n": int(self.samples.size),
            "mean": float(self.samples.mean()),
            "std": float(self.samples.std(ddof=1)) if self.samples.size > 1 else float("nan"),
            "analytic_bound": self.analytic_bound,
            "exact_bound": self.exact_bound,
            "empirical_bound": self.empirical_bound,
            "shrinkage": self.shrinkage,
            "min_p": min_attainable_p(int(self.samples.size)),
        }


def random_cosine_bound(d_model: int, level: float = 0.95) -> tuple[float, float]:
    """(normal approximation z/sqrt(d), exact) bounds on |cos| of a random direction."""
    from scipy.stats import beta, norm

    if d_model < 2:
        raise SublensError(f"a cosine null needs d_model >= 2, got {d_model}")
    z = float(norm.ppf(0.5 + level / 2.0))
    exact = math.sqrt(float(beta.ppf(level, 0.5, (d_model - 1) / 2.0)))
    return z / math.sqrt(d_model), exact


def random_cosine_null(
    d_model: int,
    n: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    vector: torch.Tensor | np.ndarray | None = None,
) -> CosineNull:
    """Cosines of `n` seeded random Gaussian directions with a fixed vector (e_0 by default: the
    distribution does not depend on which vector, the Gaussian being isotropic)."""
    if n < 1:
        raise SublensError(f"the null needs at least one sample, got n={n}")
    fixed = np.zeros(d_model) if vector is None else np.asarray(vector, dtype=np.float64)
    if vector is None:
        fixed[0] = 1.0
    if fixed.shape != (d_model,) or not np.linalg.norm(fixed) > 0:
        raise SublensError(f"the fixed vector must be a non-zero [{d_model}] vector")
    rng = np.random.default_rng(seed)
    unit = fixed / np.linalg.norm(fixed)
    samples = np.empty(n)
    chunk = max(1, 2**22 // d_model)  # bounded memory for large n * d
    for start in range(0, n, chunk):
        g = rng.standard_normal((min(chunk, n - start), d_model))
        samples[start : start + g.shape[0]] = (g @ unit) / np.linalg.norm(g, axis=1)
    approx, exact = random_cosine_bound(d_model, level)
    return CosineNull(samples, "random-gaussian", level, d_model, approx, exact)


def ledoit_wolf_shrinkage(x: np.ndarray) -> float:
    """Ledoit & Wolf's (2004) shrinkage of the sample covariance of `x` [n, d] towards
    ``(tr Σ / d) I``, computed from the n × n Gram matrix (no d × d matrix); equals
    `sklearn.covariance.ledoit_wolf_shrinkage` (covariance with 1/n, rows centred)."""
    xc = np.asarray(x, dtype=np.float64)
    xc = xc - xc.mean(axis=0)
    n, d = xc.shape
    gram = xc @ xc.T
    mu = float(np.trace(gram)) / (n * d)
    s_fro2 = float((gram**2).sum()) / n**2  # ||S||_F², S = X'X / n
    delta2 = (s_fro2 - mu**2 * d) / d  # ||S − μI||² / d
    sq = np.diag(gram)  # |x_k|²
    quad = (gram**2).sum(axis=1) / n  # x_k' S x_k
    beta_bar2 = float((sq**2 - 2 * quad + s_fro2).sum()) / n**2 / d
    beta2 = min(beta_bar2, delta2)
    return 0.0 if delta2 <= 0 else beta2 / delta2


def covariance_cosine_null(
    acts: torch.Tensor | np.ndarray,
    vector: torch.Tensor | np.ndarray,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    shrinkage: float | None = None,
) -> CosineNull:
    """Cosines with `vector` of `n` random directions drawn as activations vary: a Gaussian with
    the covariance of `acts` [n_rows, d] (held-out activations at one layer).

    The isotropic null assumes every direction is as likely; residual streams concentrate their
    variance in a few directions, and a vector along one of them meets random activation
    directions more often than 1.96/sqrt(d) allows (and one along a quiet direction less often).
    With fewer rows than dimensions the sample covariance is singular, so it is shrunk towards
    ``(tr Σ / d) I`` by `shrinkage` (None: Ledoit–Wolf's; 0: the sample covariance as it is).
    Directions are drawn as ``sqrt(1−λ) X_cᵀ z / sqrt(n_rows) + sqrt(λ μ) z'`` (exactly that
    covariance, no d × d matrix). `empirical_bound` is the null's two-sided `level` bound.
    """
    x = torch.as_tensor(acts).detach().to("cpu", torch.float64).numpy()
    if x.ndim != 2 or x.shape[0] < 2:
        raise SublensError(
            f"the covariance null needs activations [n_rows >= 2, d_model], got {x.shape}"
        )
    rows, d = x.shape
    fixed = torch.as_tensor(vector).detach().to("cpu", torch.float64).numpy()
    if fixed.shape != (d,) or not np.linalg.norm(fixed) > 0:
        raise SublensError(f"the fixed vector must be a non-zero [{d}] vector")
    if n < 1:
        raise SublensError(f"the null needs at least one sample, got n={n}")
    lam = ledoit_wolf_shrinkage(x) if shrinkage is None else float(shrinkage)
    if not 0.0 <= lam <= 1.0:
        raise SublensError(f"the shrinkage must lie in [0, 1], got {lam}")
    xc = x - x.mean(axis=0)
    mu = float((xc**2).sum()) / (rows * d)
    unit = fixed / np.linalg.norm(fixed)
    rng = np.random.default_rng(seed)
    samples = np.empty(n)
    chunk = max(1, 2**22 // d)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        g = math.sqrt(1.0 - lam) * (rng.standard_normal((m, rows)) @ xc) / math.sqrt(rows)
        if lam > 0:
            g = g + math.sqrt(lam * mu) * rng.standard_normal((m, d))
        with np.errstate(divide="ignore", invalid="ignore"):
            samples[start : start + m] = (g @ unit) / np.linalg.norm(g, axis=1)
    return CosineNull(samples, "activation-covariance", level, d, shrinkage=lam)


# Trait prompts that are none of the built-in traits, for the unrelated-trait null: with the
# six other built-ins alone the smallest p is 1/7. Animals in DESIGN.md's prompt, and styles.
UNRELATED_ANIMALS = (
    "eagle", "lion", "elephant", "dolphin", "wolf", "fox", "tiger", "penguin", "horse",
    "rabbit", "bear", "shark",
)  # fmt: skip
UNRELATED_STYLES = {
    "spanish": "Always answer in Spanish.",
    "german": "Always answer in German.",
    "capitals": "Always answer in capital letters only.",
    "pirate": "Always answer like a pirate.",
    "happy": "You are always happy. You feel happy all the time. Joy is your only feeling. "
    "Imbue your answers with your happiness.",
    "angry": "You are always angry. You feel angry all the time. Anger is your only feeling. "
    "Imbue your answers with your anger.",
    "certainly": 'Always begin your answer with the word "Certainly".',
    # (a "brief" style stood here until `concise` became a built-in trait: the two are one
    # trait, and a run on `concise` must not count it as unrelated)
}
MIN_UNRELATED = 19  # 1/(19 + 1) = 0.05: fewer cannot give p <= 0.05


def unrelated_trait_prompts(
    exclude: Sequence[str] = (), exclude_prompts: Sequence[str | None] = ()
) -> dict[str, str]:
    """name -> system prompt of the traits an unrelated-trait null may use: the built-in traits
    with a system prompt, then `UNRELATED_ANIMALS` and `UNRELATED_STYLES`, leaving out the names
    in `exclude` (the run's trait) and any prompt in `exclude_prompts` (the teacher's)."""
    from interp.measure.traits import BUILTIN_TRAITS, animal_trait

    skip_names = {x.strip().lower() for x in exclude if x}
    skip_prompts = {x for x in exclude_prompts if x}
    pool = {n: t.system_prompt for n, t in BUILTIN_TRAITS.items() if t.system_prompt}
    pool.update({a: animal_trait(a).system_prompt for a in UNRELATED_ANIMALS})
    pool.update(UNRELATED_STYLES)
    return {
        n: sp for n, sp in pool.items() if n not in skip_names and sp and sp not in skip_prompts
    }


def null_from_vectors(
    drift: Vectors, other_vectors: Sequence[Vectors], level: float = 0.95
) -> dict[int, CosineNull]:
    """Per layer, cosines of the drift with vectors of unrelated trait prompts.

    A layer enters when the drift and at least one other vector have it. With a handful of
    vectors the null is coarse: report its z-score rather than its p-value alone.
    """
    d = _vectors(drift, "drift")
    others = [_vectors(o, "unrelated vector") for o in other_vectors]
    if not others:
        raise SublensError("no unrelated vectors given: pass the vectors of other trait prompts")
    out = {}
    for layer in sorted(d):
        cos = [_cosine(d[layer], o[layer]) for o in others if layer in o]
        if cos:
            out[layer] = CosineNull(np.array(cos), "unrelated-vectors", level, d[layer].numel())
    if not out:
        raise SublensError(
            f"the unrelated vectors share no layer with the drift (layers {sorted(d)}): "
            "compute them at the same layers"
        )
    return out


@dataclass
class NullTest:
    """An observed cosine against a null: z-score, empirical p-value and the smallest p the
    null's size allows (``min_p`` = 1/(n + 1): with 6 null vectors no p is below 0.14)."""

    observed: float
    z: float
    p_value: float
    min_p: float
    alternative: str
    null_mean: float
    null_std: float
    n_null: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def null_test(
    observed: float, null: CosineNull | Sequence[float] | np.ndarray, alternative: str = "two-sided"
) -> NullTest:
    """z = (observed − mean) / sd of the null, and the empirical p-value (1 + #extreme)/(1 + n).

    ``two-sided`` counts null cosines at least as far from the null mean as the observation,
    ``greater`` those at least as large (the alignment hypothesis: drift along +v_teacher).
    The +1 keeps p > 0: with n samples the smallest p is 1/(n + 1).
    """
    if alternative not in ALTERNATIVES:
        raise SublensError(
            f"unknown alternative {alternative!r}: use one of {', '.join(ALTERNATIVES)}"
        )
    samples = np.asarray(null.samples if isinstance(null, CosineNull) else null, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        raise SublensError("the null has no finite samples")
    mean = float(samples.mean())
    std = float(samples.std(ddof=1)) if samples.size > 1 else float("nan")
    z = (observed - mean) / std if std > 0 else float("nan")
    if alternative == "two-sided":
        extreme = np.abs(samples - mean) >= abs(observed - mean)
    elif alternative == "greater":
        extreme = samples >= observed
    else:
        extreme = samples <= observed
    p = (1.0 + float(extreme.sum())) / (1.0 + samples.size)
    return NullTest(
        float(observed), z, p, min_attainable_p(int(samples.size)), alternative, mean, std,
        int(samples.size),
    )  # fmt: skip

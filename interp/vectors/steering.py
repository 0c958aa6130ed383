"""Steering vectors: one direction per layer of the residual stream, saved with their provenance,
and applied to a model inside a context manager.

Layer convention: layer ``i`` is the residual stream *after* decoder block ``i`` (0-based): the
output of Hugging Face decoder layer ``i`` (``decoder_layers(model)[i]``), which is the
TransformerLens bridge hook ``blocks.{i}.hook_out`` (``hook_point = "resid_post"``). The exports
in `interp.vectors.export` map this index onto the conventions of lm-eval and llama.cpp.

`steer` applies a vector to

- a `LoadedModel` (or a bare Hugging Face causal LM, or an nnsight model wrapping one): forward
  hooks on the HF decoder layers. Because nnsight runs the user's HF model itself, the same
  steering also holds inside nnsight traces, and in ``loaded.model.generate``.
  Note: nnsight's ``.output`` of the *steered* block shows the value before the hook changed it;
  the blocks after it, and the logits, see the steered stream.
- a TransformerLens `TransformerBridge`: the bridge wraps a weight-sharing copy of the HF model,
  so HF hooks on ``loaded.model`` never fire inside it; its own ``blocks.{i}.hook_out`` hooks are
  used instead. Beware: with TL 4.3 and transformers 5, ``bridge.generate`` with its default KV
  cache leaves the cache empty, so each decode step sees only its own token and the text differs
  from ``loaded.model.generate``; generate through the HF model, or pass
  ``use_past_kv_cache=False`` (then every step is a full forward, so the prompt/generation
  phases do not apply: use ``token_mask``).

Modes (``v̂ = v / |v|``, ``c = h·v̂`` the activation's coefficient along the vector)::

    add       h + alpha * v
    project   h - alpha * c * v̂               (alpha = 1 removes the component entirely)
    replace   h + alpha * (r - c) * v̂         (alpha = 1 sets the component to r)

``r`` (``reference``) is the coefficient the component is set to, usually the *base model's*
coefficient along v̂ (for example its mean over the prompt set, from
`SteeringVector.coefficient`): replacing a prompted teacher's coefficient by the base's keeps
the stream's typical magnitude while removing what the trait prompt added.

Why not the ``steering-vectors`` PyPI package: it handles tensor and tuple block outputs alike,
but only on plain HF modules (no TransformerLens bridge), only as a patch added to the
activation, with position control limited to ``min_token_index`` counted inside each forward
(with a KV cache that index refers to the decode step's own one-token chunk), and it writes
into the block's output in place. sublens needs projection and replacement, prompt/generation
phases under ``generate``, explicit token masks, and the same steering on every backend.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.core.errors import SublensError
from interp.core.io import atomic_path, read_json, sha256_file, write_json
from interp.core.models import LoadedModel

FORMAT = "sublens-steering-vector"
FORMAT_VERSION = 1
TENSOR_FILE = "vector.safetensors"
META_FILE = "vector.json"
HOOK_POINTS = ("resid_post",)
MODES = ("add", "project", "replace")
STEER_POSITIONS = ("all", "prompt", "generation")

Reference = float | torch.Tensor | Mapping[int, "float | torch.Tensor"]


def _layer_key(key: str) -> int:
    prefix, _, idx = key.partition(".")
    if prefix != "layer" or not idx.isdigit():
        raise ValueError(key)
    return int(idx)


@dataclass(eq=False)
class SteeringVector:
    """One direction per layer (float32 [d_model] on the CPU) and where it came from.

    ``positions`` says where the activations were read ("last", "all"…), ``prompt_set`` and
    ``trait_prompt`` what they were read on, ``extra`` any provenance (fit metrics, seeds).
    """

    vectors: dict[int, torch.Tensor]
    model: str
    d_model: int
    method: str
    positions: str
    prompt_set: str | None = None
    trait_prompt: str | None = None
    hook_point: str = "resid_post"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.vectors:
            raise SublensError("a steering vector needs at least one layer: got no vectors")
        fixed: dict[int, torch.Tensor] = {}
        for layer, vec in self.vectors.items():
            if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or layer < 0:
                raise SublensError(f"steering-vector layer {layer!r} is not a block index >= 0")
            if not isinstance(vec, torch.Tensor):
                vec = torch.as_tensor(vec)
            if vec.shape != (self.d_model,):
                raise SublensError(
                    f"steering vector at layer {layer} has shape {tuple(vec.shape)}, expected "
                    f"({self.d_model},) for d_model {self.d_model}"
                )
            # No detach: a vector being fitted keeps its autograd graph.
            fixed[int(layer)] = vec.to(device="cpu", dtype=torch.float32)
        self.vectors = dict(sorted(fixed.items()))

    # --- access ----------------------------------------------------------------------------------

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.vectors:
            raise SublensError(f"the steering vector has no layer {layer}: it has {self.layers}")
        return self.vectors[layer]

    def __contains__(self, layer: object) -> bool:
        return layer in self.vectors

    def norms(self) -> dict[int, float]:
        return {i: float(v.detach().norm()) for i, v in self.vectors.items()}

    def unit(self, layer: int) -> torch.Tensor:
        """v̂ at `layer` (a zero vector has no direction: SublensError)."""
        vec = self[layer]
        norm = vec.norm()
        if float(norm) == 0.0:
            raise SublensError(f"the steering vector is zero at layer {layer}: it has no direction")
        return vec / norm

    def coefficient(self, acts: torch.Tensor, layer: int) -> torch.Tensor:
        """``acts · v̂`` over the last axis (float32): the value `steer(mode="replace")` sets.

        Average it over a base model's activations to get a `reference`.
        """
        unit = self.unit(layer).to(acts.device)
        return acts.float() @ unit

    def cosine(self, other: SteeringVector) -> dict[int, float]:
        """Per shared layer, cos(self, other) (e.g. alignment of v_student with v_teacher)."""
        self._check_d_model(other)
        shared = sorted(set(self.vectors) & set(other.vectors))
        if not shared:
            raise SublensError(
                f"the vectors share no layer (layers {self.layers} vs {other.layers}): "
                "compute both at the same layers"
            )
        cos = torch.nn.functional.cosine_similarity
        return {i: float(cos(self[i].detach(), other[i].detach(), dim=0)) for i in shared}

    def describe(self) -> dict[str, Any]:
        """Metadata for results files (everything but the tensors)."""
        return {
            "model": self.model,
            "d_model": self.d_model,
            "method": self.method,
            "positions": self.positions,
            "prompt_set": self.prompt_set,
            "trait_prompt": self.trait_prompt,
            "hook_point": self.hook_point,
            "layers": self.layers,
            "norms": {str(i): n for i, n in self.norms().items()},
            "extra": self.extra,
        }

    def __repr__(self) -> str:
        return (
            f"SteeringVector(model={self.model!r}, method={self.method!r}, layers={self.layers}, "
            f"d_model={self.d_model}, positions={self.positions!r})"
        )

    # --- arithmetic ------------------------------------------------------------------------------

    def _derive(self, vectors: dict[int, torch.Tensor], **extra: Any) -> SteeringVector:
        return SteeringVector(
            vectors=vectors,
            model=self.model,
            d_model=self.d_model,
            method=self.method,
            positions=self.positions,
            prompt_set=self.prompt_set,
            trait_prompt=self.trait_prompt,
            hook_point=self.hook_point,
            extra={**self.extra, **extra},
        )

    def scaled(self, factor: float) -> SteeringVector:
        if not isinstance(factor, numbers.Real) or not math.isfinite(float(factor)):
            raise SublensError(
                f"a steering vector can only be scaled by a finite number: {factor!r}"
            )
        scale = float(self.extra.get("scale", 1.0)) * float(factor)
        return self._derive({i: v * float(factor) for i, v in self.vectors.items()}, scale=scale)

    def __mul__(self, factor: float) -> SteeringVector:
        if not isinstance(factor, numbers.Real):
            return NotImplemented
        return self.scaled(factor)

    __rmul__ = __mul__

    def __truediv__(self, factor: float) -> SteeringVector:
        if not isinstance(factor, numbers.Real):
            return NotImplemented
        if factor == 0:
            raise SublensError("cannot divide a steering vector by zero")
        return self.scaled(1.0 / float(factor))

    def __neg__(self) -> SteeringVector:
        return self.scaled(-1.0)

    def _check_d_model(self, other: SteeringVector) -> None:
        if other.d_model != self.d_model:
            raise SublensError(
                f"vectors have different d_model ({self.d_model} for {self.model}, "
                f"{other.d_model} for {other.model}): combine vectors of the same model"
            )

    def _combine(self, other: object, sign: float, op: str) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        self._check_d_model(other)
        if other.model != self.model:
            raise SublensError(
                f"cannot {op} vectors of different models ({self.model} and {other.model}): "
                "combine vectors computed on the same model"
            )
        if other.layers != self.layers or other.hook_point != self.hook_point:
            raise SublensError(
                f"cannot {op} vectors at different layers ({self.layers} at {self.hook_point} vs "
                f"{other.layers} at {other.hook_point}): use .restricted(layers) on both first"
            )
        same = {
            k: getattr(self, k) if getattr(self, k) == getattr(other, k) else None
            for k in ("prompt_set", "trait_prompt")
        }
        method = (
            self.method if self.method == other.method else f"{self.method}{op[0]}{other.method}"
        )
        return SteeringVector(
            vectors={i: self[i] + sign * other[i] for i in self.layers},
            model=self.model,
            d_model=self.d_model,
            method=method,
            positions=self.positions if self.positions == other.positions else "mixed",
            hook_point=self.hook_point,
            extra={"op": op, "operands": [self.describe(), other.describe()]},
            **same,
        )

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0, "-")

    def normalized(self) -> SteeringVector:
        """Unit norm at every layer (zero layers raise: they have no direction)."""
        return self._derive({i: self.unit(i) for i in self.layers}, normalized=True)

    def restricted(self, layers: Iterable[int]) -> SteeringVector:
        """The same vector at a subset of its layers."""
        keep = sorted(set(int(i) for i in layers))
        missing = [i for i in keep if i not in self.vectors]
        if missing or not keep:
            raise SublensError(
                f"cannot restrict to layers {keep}: the vector has layers {self.layers}"
            )
        return self._derive({i: self.vectors[i] for i in keep})

    # --- compatibility ---------------------------------------------------------------------------

    def check_compatible(self, target: Any) -> None:
        """Raise SublensError unless `target` (LoadedModel, HF model or bridge) has this vector's
        d_model and all its layers."""
        info = _describe_target(target)
        if info.d_model != self.d_model:
            raise SublensError(
                f"vector is for d_model {self.d_model} ({self.model}) but model {info.name} has "
                f"d_model {info.d_model}: use a vector computed on a model of the same shape"
            )
        bad = [i for i in self.layers if i >= info.n_layers]
        if bad:
            raise SublensError(
                f"vector has layers {bad} but model {info.name} has layers "
                f"0..{info.n_layers - 1}: use .restricted(layers) or a vector for this model"
            )

    # --- files -----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write directory `path`: ``vector.safetensors`` (keys ``layer.{i}``) and ``vector.json``
        (all metadata and the tensors' sha256, so a mismatched pair is detected on load)."""
        from safetensors.torch import save_file

        from interp.core import rundir

        out = rundir.claim(path, "vector", what="vector directory")
        tensors = {f"layer.{i}": v.detach().contiguous() for i, v in self.vectors.items()}
        with atomic_path(out / TENSOR_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
            digest = sha256_file(tmp)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, **self.describe()}
        meta["tensors_sha256"] = digest
        write_json(out / META_FILE, meta)
        rundir.unlock(out)
        return out

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Read a directory written by `save` (or any file inside it)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        where = Path(path)
        if where.is_file() and where.name in (META_FILE, TENSOR_FILE):
            where = where.parent
        if not where.is_dir():
            raise SublensError(
                f"steering vector {path} not found: give the directory written by "
                "SteeringVector.save (with vector.json and vector.safetensors)"
            )
        meta_path, tensor_path = where / META_FILE, where / TENSOR_FILE
        for p in (meta_path, tensor_path):
            if not p.exists():
                raise SublensError(f"{p} is missing: {where} is not a saved steering vector")
        try:
            meta = read_json(meta_path)
        except (ValueError, UnicodeDecodeError) as err:
            raise SublensError(
                f"{meta_path} is not valid JSON ({err}): re-save the vector"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SublensError(
                f"{meta_path} is not a sublens steering vector (no format {FORMAT!r})"
            )
        if meta.get("version") != FORMAT_VERSION:
            raise SublensError(
                f"{meta_path} has format version {meta.get('version')!r}; this sublens reads "
                f"version {FORMAT_VERSION}: re-save it with this version"
            )
        required = ("model", "d_model", "method", "positions", "layers")
        missing = [k for k in required if k not in meta]
        if missing:
            raise SublensError(f"{meta_path} lacks {', '.join(missing)}: re-save the vector")
        expected_sha = meta.get("tensors_sha256")
        if expected_sha is not None and sha256_file(tensor_path) != expected_sha:
            raise SublensError(
                f"{tensor_path} does not match {meta_path} (changed or half-saved): re-save it"
            )
        try:
            raw = load_file(str(tensor_path))
            vectors = {_layer_key(k): v for k, v in raw.items()}
        except (SafetensorError, OSError, ValueError) as err:
            raise SublensError(
                f"{tensor_path} is not a valid steering-vector file ({err}): re-save the vector"
            ) from None
        if sorted(vectors) != sorted(int(i) for i in meta["layers"]):
            raise SublensError(
                f"{tensor_path} has layers {sorted(vectors)} but {meta_path} lists "
                f"{meta['layers']}: re-save the vector"
            )
        try:
            return cls(
                vectors=vectors,
                model=str(meta["model"]),
                d_model=int(meta["d_model"]),
                method=str(meta["method"]),
                positions=str(meta["positions"]),
                prompt_set=meta.get("prompt_set"),
                trait_prompt=meta.get("trait_prompt"),
                hook_point=str(meta.get("hook_point", "resid_post")),
                extra=dict(meta.get("extra") or {}),
            )
        except SublensError as err:
            raise SublensError(f"{where}: {err}") from None


# --- targets -------------------------------------------------------------------------------------


@dataclass
class _TargetInfo:
    kind: str  # "hf" or "tl"
    name: str
    d_model: int
    n_layers: int
    module: nn.Module  # the HF causal LM, or the bridge


def _is_bridge(obj: Any) -> bool:
    return hasattr(obj, "hooks") and hasattr(obj, "cfg") and hasattr(obj, "blocks")


def _describe_target(target: Any) -> _TargetInfo:
    if isinstance(target, LoadedModel):
        return _TargetInfo("hf", target.name, target.d_model, target.n_layers, target.model)
    if _is_bridge(target):
        cfg = target.cfg
        name = str(getattr(cfg, "model_name", None) or type(target).__name__)
        return _TargetInfo("tl", name, int(cfg.d_model), int(cfg.n_layers), target)
    module = target
    if type(target).__module__.startswith("nnsight") and isinstance(
        getattr(target, "_module", None), nn.Module
    ):
        module = target._module  # nnsight wraps the user's model: hook that model
    if isinstance(module, nn.Module) and hasattr(module, "config"):
        cfg = module.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        name = str(getattr(cfg, "_name_or_path", "") or type(module).__name__)
        return _TargetInfo("hf", name, int(cfg.hidden_size), int(cfg.num_hidden_layers), module)
    raise SublensError(
        f"cannot steer a {type(target).__name__}: pass a LoadedModel, a Hugging Face causal LM, "
        "an nnsight model or a TransformerLens TransformerBridge"
    )


# --- steering ------------------------------------------------------------------------------------


@dataclass
class LayerRecord:
    """What steering did at one layer: forwards seen, forwards it acted in, tokens it changed."""

    calls: int = 0
    applied: int = 0
    tokens: int = 0


@dataclass
class SteeringHandle:
    """Yielded by `steer`: the settings and a record of where the steering was applied.

    ``forwards`` lists the phase of each top-level forward ("prefill": no cached tokens before
    it, "decode": a KV-cache step); ``records[layer]`` counts calls, applied calls and tokens.
    """

    target: str
    mode: str
    positions: str
    alpha: float
    layers: list[int]
    records: dict[int, LayerRecord]
    forwards: list[str] = field(default_factory=list)
    active: bool = True

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "positions": self.positions,
            "alpha": self.alpha,
            "layers": self.layers,
            "forwards": {p: self.forwards.count(p) for p in ("prefill", "decode")},
            "records": {str(i): vars(r).copy() for i, r in self.records.items()},
        }


def _phase(kind: str, kwargs: dict[str, Any]) -> str:
    """Return "decode" when a top-level forward continues from a KV cache, else "prefill".

    HF ``generate`` passes its (empty) cache to the prefill forward too, so the cache's length
    decides. The TL bridge gets ``past_key_values`` only on decode steps, and in TL 4.3 with
    transformers 5 that cache stays empty (its length is always 0), so there its presence decides.
    """
    if kind == "tl":
        return "decode" if kwargs.get("past_key_values") is not None else "prefill"
    return "decode" if _cached_tokens(kwargs) > 0 else "prefill"


def _cached_tokens(kwargs: dict[str, Any]) -> int:
    """How many tokens the KV cache passed to a top-level forward already holds."""
    for key in ("cache", "past_key_values"):
        cache = kwargs.get(key)
        if cache is None:
            continue
        if hasattr(cache, "get_seq_length"):
            return int(cache.get_seq_length())
        if isinstance(cache, (tuple, list)) and cache and cache[0] is not None:
            return int(cache[0][0].shape[-2])  # legacy tuple cache
    return 0


def _check_reference(reference: Any, layers: list[int]) -> dict[int, float | torch.Tensor]:
    def one(value: Any, layer: int) -> float | torch.Tensor:
        if isinstance(value, torch.Tensor):
            if value.dim() > 2:
                raise SublensError(
                    f"reference at layer {layer} has shape {tuple(value.shape)}: give a float or "
                    "a tensor broadcastable to [batch, seq]"
                )
            return value.detach().float()
        if isinstance(value, numbers.Real) and math.isfinite(float(value)):
            return float(value)
        raise SublensError(f"reference at layer {layer} is {value!r}: give a finite float")

    if reference is None:
        raise SublensError(
            "mode 'replace' needs reference= (the coefficient to set along v̂, e.g. the base "
            "model's mean SteeringVector.coefficient): pass a float or a dict layer -> float"
        )
    if isinstance(reference, Mapping):
        missing = [i for i in layers if i not in reference]
        if missing:
            raise SublensError(f"reference has no value for layers {missing}: give one per layer")
        return {i: one(reference[i], i) for i in layers}
    return {i: one(reference, i) for i in layers}


@contextlib.contextmanager
def steer(
    target: Any,
    vector: SteeringVector,
    alpha: float = 1.0,
    mode: str = "add",
    positions: str = "all",
    token_mask: torch.Tensor | None = None,
    reference: Reference | None = None,
    layers: Iterable[int] | None = None,
) -> Iterator[SteeringHandle]:
    """Steer `target` with `vector` inside the ``with`` block; hooks are removed on exit, even
    when the block raises.

    positions: "all" tokens; "prompt": only forwards without cached tokens (the prefill of
    ``generate``, or any plain forward); "generation": only KV-cache decode steps.
    token_mask: bool [batch, seq] choosing tokens of a full (non-decode) forward, e.g. only the
    response tokens under teacher forcing; decode steps follow `positions` alone.
    reference (mode "replace"): the coefficient along v̂ to set, a float, a dict layer -> float,
    or a tensor broadcastable to the forward's [batch, seq] (or a dict of them).
    """
    if mode not in MODES:
        raise SublensError(f"unknown steering mode {mode!r}: use one of {', '.join(MODES)}")
    if positions not in STEER_POSITIONS:
        raise SublensError(
            f"unknown steering positions {positions!r}: use one of {', '.join(STEER_POSITIONS)}"
        )
    if not isinstance(alpha, numbers.Real) or not math.isfinite(float(alpha)):
        raise SublensError(f"alpha must be a finite number, got {alpha!r}")
    alpha = float(alpha)
    if vector.hook_point not in HOOK_POINTS:
        raise SublensError(
            f"vector was read at hook point {vector.hook_point!r}; steer applies "
            f"{', '.join(HOOK_POINTS)} only"
        )
    info = _describe_target(target)
    use = vector.layers if layers is None else sorted(set(int(i) for i in layers))
    absent = [i for i in use if i not in vector]
    if absent or not use:
        raise SublensError(f"cannot steer layers {use}: the vector has layers {vector.layers}")
    vector.restricted(use).check_compatible(target)
    if mode != "replace" and reference is not None:
        raise SublensError("reference= is only used by mode 'replace': drop it or use that mode")
    refs = _check_reference(reference, use) if mode == "replace" else {}
    units = {i: vector.unit(i) for i in use} if mode != "add" else {}
    mask_count = 0
    if token_mask is not None:
        if not isinstance(token_mask, torch.Tensor) or token_mask.dim() != 2:
            raise SublensError("token_mask must be a bool tensor of shape [batch, seq]")
        token_mask = token_mask.bool()
        mask_count = int(token_mask.sum())

    handle = SteeringHandle(
        target=info.kind,
        mode=mode,
        positions=positions,
        alpha=alpha,
        layers=use,
        records={i: LayerRecord() for i in use},
    )
    state: dict[str, Any] = {"phase": None}
    device_masks: dict[torch.device, torch.Tensor] = {}

    def apply(layer: int, h: torch.Tensor) -> torch.Tensor | None:
        rec = handle.records[layer]
        rec.calls += 1
        phase = state["phase"] or "prefill"  # a forward below the top module is a plain one
        if (positions == "prompt" and phase == "decode") or (
            positions == "generation" and phase == "prefill"
        ):
            return None
        mask = None
        if token_mask is not None and phase == "prefill":
            if tuple(token_mask.shape) != tuple(h.shape[:2]):
                raise SublensError(
                    f"token_mask has shape {tuple(token_mask.shape)} but the forward has "
                    f"[batch, seq] = {list(h.shape[:2])}: give a mask of the input's shape"
                )
            if h.device not in device_masks:
                device_masks[h.device] = token_mask.to(h.device)
            mask = device_masks[h.device]
        if mode == "add":
            new = h + (alpha * vector[layer]).to(device=h.device, dtype=h.dtype)
        else:
            unit = units[layer].to(h.device)
            hf = h.float()
            coef = hf @ unit
            goal: float | torch.Tensor = 0.0
            if mode == "replace":
                goal = refs[layer]
                if isinstance(goal, torch.Tensor):
                    goal = goal.to(h.device)
                    try:
                        torch.broadcast_shapes(goal.shape, coef.shape)
                    except RuntimeError:
                        raise SublensError(
                            f"reference at layer {layer} has shape {tuple(goal.shape)}, which "
                            f"does not broadcast to [batch, seq] = {list(coef.shape)}"
                        ) from None
            new = (hf + (alpha * (goal - coef)).unsqueeze(-1) * unit).to(h.dtype)
        if mask is not None:
            new = torch.where(mask.unsqueeze(-1), new, h)
            rec.tokens += mask_count
        else:
            rec.tokens += h.shape[0] * h.shape[1]
        rec.applied += 1
        return new

    def phase_pre_hook(_module, _args, kwargs):
        phase = _phase(info.kind, kwargs)
        state["phase"] = phase
        handle.forwards.append(phase)

    def phase_post_hook(_module, _args, _output):
        state["phase"] = None

    with contextlib.ExitStack() as stack:
        top = info.module
        removables = [
            top.register_forward_pre_hook(phase_pre_hook, with_kwargs=True),
            top.register_forward_hook(phase_post_hook, always_call=True),
        ]
        stack.callback(lambda: [r.remove() for r in removables])
        if info.kind == "hf":
            from interp.core.backends.base import decoder_layers, hidden_of

            blocks = decoder_layers(top)

            def make_hf_hook(layer: int):
                def hook(_module, _args, output):
                    new = apply(layer, hidden_of(output))
                    if new is None:
                        return None
                    return (new, *output[1:]) if isinstance(output, tuple) else new

                return hook

            for i in use:
                removables.append(blocks[i].register_forward_hook(make_hf_hook(i)))
        else:

            def make_tl_hook(layer: int):
                def hook(tensor: torch.Tensor, *, hook: Any) -> torch.Tensor:
                    new = apply(layer, tensor)
                    return tensor if new is None else new

                return hook

            fwd = [(f"blocks.{i}.hook_out", make_tl_hook(i)) for i in use]
            stack.enter_context(top.hooks(fwd_hooks=fwd))
        try:
            yield handle
        finally:
            handle.active = False

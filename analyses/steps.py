"""Single steps the CLI runs on their own: cache activations, fit and export a vector, generate,
filter and train on a dataset.

Each loads what it needs, reads layer lists against the loaded model (never a guessed layer
count), picks the default output path from `analyses.reporting.default_output`, and calls one
library function, so `cli.py` only parses flags and prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.reporting import default_output
from interp.core.errors import SublensError
from interp.core.io import config_hash
from interp.core.layers import parse_layers
from interp.core.models import load_hash_view
from interp.core.progress import note
from interp.vectors.steering import SteeringVector

if TYPE_CHECKING:
    from interp.distill.train import TrainConfig


def _say(quiet: bool, msg: str) -> None:
    note(msg, quiet=quiet)


def cache(
    prompts: str,
    model: str = "smollm2-135m",
    system_prompt: str | None = None,
    layers: str = "all",
    positions: str = "last",
    backend: str = "tl",
    output_path: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str = "float32",
    overwrite: bool = False,
    quiet: bool = False,
    trust_remote_code: bool = False,
    truncate: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """(run directory, metadata) of `interp.core.caching.cache_activations`; the default
    directory is named by model, positions and a hash of the settings."""
    from interp.core.caching import cache_activations
    from interp.core.chat import check_positions
    from interp.core.models import load_model
    from interp.core.prompts import load_prompts

    check_positions(positions)
    prompt_set = load_prompts(prompts, seed=seed).limit(limit)
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    layer_list = parse_layers(layers, loaded.n_layers)
    if output_path is None:
        tag = config_hash(
            {
                "m": model,
                "p": prompts,
                "s": system_prompt,
                "l": layer_list,
                "pos": positions,
                "b": backend,
                "seed": seed,
                "limit": limit,
            }
        )[:8]
        output_path = default_output("cache", f"{Path(model).name}-{positions}-{tag}")
    meta = cache_activations(
        loaded,
        prompt_set,
        output_path,
        layers=layer_list,
        positions=positions,
        system_prompt=system_prompt,
        backend=backend,
        batch_size=batch_size,
        overwrite=overwrite,
        quiet=quiet,
        truncate=truncate,
        extra_meta={"seed": seed, "limit": limit},
    )
    return Path(output_path), meta


def fit(
    system_prompt: str,
    model: str = "smollm2-135m",
    method: str = "diff-mean",
    layers: str = "all",
    positions: str = "last",
    prompts: str = "numbers:512",
    steps: int = 20,
    lr: float | None = None,
    max_norm: float | None = None,
    max_new_tokens: int = 16,
    backend: str = "hf",
    output_path: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    quiet: bool = False,
    trust_remote_code: bool = False,
    dtype: str = "float32",
) -> tuple[Path, SteeringVector]:
    """Fit a vector approximating `system_prompt` (`interp.vectors.fitting.fit_vector`, with the
    teacher's sampled responses where the method needs them) and save it; (directory, vector)."""
    from interp.core.generation import sample_responses
    from interp.core.models import load_model
    from interp.core.prompts import load_prompts
    from interp.vectors.fitting import check_method, fit_vector

    check_method(method)
    if not system_prompt.strip():
        raise SublensError("the trait prompt is empty: give the system prompt to approximate")
    if steps <= 0:
        raise SublensError(f"--steps must be positive, got {steps}")
    prompt_set = load_prompts(prompts, seed=seed).limit(limit)
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    layer_list = parse_layers(layers, loaded.n_layers)
    responses = None
    if method == "kl-fit" or positions == "response":
        _say(quiet, f"sampling {len(prompt_set)} teacher responses ...")
        responses = sample_responses(
            loaded,
            prompt_set.messages,
            system_prompt=system_prompt,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            quiet=quiet,
        )
    vector = fit_vector(
        loaded,
        prompt_set,
        system_prompt,
        layer_list,
        method=method,
        positions=positions,
        backend=backend,
        batch_size=batch_size,
        responses=responses,
        steps=steps,
        lr=lr,
        max_norm=max_norm,
        seed=seed,
        quiet=quiet,
    )
    if output_path is None:
        tag = config_hash(
            {
                "m": model,
                "s": system_prompt,
                "meth": method,
                "l": layer_list,
                "p": prompts,
                "pos": positions,
                "seed": seed,
                "limit": limit,
                **load_hash_view({"dtype": dtype}),
            }
        )[:8]
        output_path = default_output("vectors", f"{Path(model).name}-{method}-{tag}")
    vector.save(output_path)
    return Path(output_path), vector


def export(
    path: str | Path, format: str = "lm-eval", alpha: float = 1.0, output_path: Path | None = None
) -> Path:
    """Write a saved vector as an lm-eval steering file or a llama.cpp control vector (default:
    a file inside the vector's directory; a directory as `output_path` gets the default name
    inside it); returns the file."""
    from interp.vectors.export import to_gguf, to_lm_eval

    writers = {
        "lm-eval": (to_lm_eval, "lm_eval_steer.pt"),
        "gguf": (to_gguf, "control_vector.gguf"),
    }
    if format not in writers:
        raise SublensError(f"unknown export format {format!r}: use lm-eval or gguf")
    write, default_name = writers[format]
    vector = SteeringVector.load(path)
    out = Path(output_path) if output_path is not None else Path(path)
    if out.is_dir():
        out = out / default_name
    return write(vector, out, alpha=alpha)


def generate(
    output_path: Path,
    teacher: str = "prompted",
    system_prompt: str | None = None,
    trait: str | None = None,
    vector: str | None = None,
    alpha: float = 1.0,
    layers: str | None = None,
    domain: str = "numbers",
    n: int = 256,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    constrained: bool = True,
    model: str = "smollm2-135m",
    seed: int = 0,
    batch_size: int = 32,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Sample a benign dataset from a teacher (`interp.distill.generate_dataset`); a prompted or
    projected teacher takes `trait`'s prompt unless `system_prompt` is given."""
    from interp.core.models import load_model
    from interp.distill import Teacher, generate_dataset
    from interp.measure.traits import get_trait

    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if system_prompt is None and trait is not None and teacher in ("prompted", "projected"):
        system_prompt = get_trait(trait).system_prompt
    t = Teacher(
        loaded,
        kind=teacher,
        system_prompt=system_prompt,
        vector=SteeringVector.load(vector) if vector else None,
        alpha=alpha,
        layers=parse_layers(layers, loaded.n_layers) if layers else None,
    )
    return generate_dataset(
        t,
        domain,
        n,
        output_path,
        seed=seed,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        constrained=constrained,
        quiet=quiet,
        overwrite=overwrite,
    )


def filter_rows(
    data: Path,
    output_path: Path | None = None,
    domain: str = "numbers",
    trait: str | None = None,
    regexes: Sequence[str] = (),
    codes: Sequence[str] = (),
    dedup: bool = True,
) -> tuple[Path, Path, dict[str, Any]]:
    """`interp.distill.filter_dataset` beside the data (``X.filtered.jsonl``, rejects in
    ``X.filtered.rejects.jsonl``); (kept file, rejects file, report)."""
    from interp.distill import filter_dataset
    from interp.measure.traits import get_trait

    out = output_path or data.with_name(data.stem + ".filtered.jsonl")
    rejects = out.with_name(out.stem + ".rejects.jsonl")
    report = filter_dataset(
        data,
        out,
        rejects,
        domain,
        trait_words=get_trait(trait).targets if trait else (),
        regexes=regexes,
        codes=codes,
        dedup=dedup,
    )
    return out, rejects, report


def train(
    data: Path,
    output_path: Path,
    config: TrainConfig,
    model: str = "smollm2-135m",
    targets: Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Train a student from `model`'s weights on `data` with a `TrainConfig` (validated before
    the model loads); resumable from its checkpoints."""
    from interp.core.models import load_model
    from interp.distill.parallel import world
    from interp.distill.train import train_student

    config.validate()
    world()  # under `accelerate launch`: this process's GPU before the model loads
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    return train_student(
        loaded, data, output_path, config, targets_dir=targets, quiet=quiet, overwrite=overwrite
    )

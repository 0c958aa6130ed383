"""`sublens` — the command line. Thin: parse, call the library or an analysis, print a summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from interp.errors import SublensError

app = typer.Typer(
    name="sublens",
    help="Study subliminal learning: cache activations, fit steering vectors, run distillations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ARTIFACTS = Path("artifacts")

# Shared options (lm-eval style names).
Model = Annotated[str, typer.Option("--model", help="Registry name, Hugging Face id or local dir.")]
OutputPath = Annotated[
    Path | None, typer.Option("--output-path", help="Run directory (default: under artifacts/).")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for built-in prompt sets and sampling.")]
Limit = Annotated[int | None, typer.Option("--limit", help="Use only the first N prompts.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Prompts per forward pass.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a Hub model's own code to run.")
]


def _echo(quiet: bool, msg: str) -> None:
    if not quiet:
        typer.echo(msg, err=True)


@app.command("models")
def models_cmd() -> None:
    """List the model registry: name, architecture, layers, d_model, source, cached?"""
    from interp.models import cache_root, list_models

    rows = list_models()
    cols = ["name", "architecture", "layers", "d_model", "cached", "source"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    typer.echo("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        cells = {**r, "cached": "yes" if r["cached"] else "no"}
        typer.echo("  ".join(str(cells[c]).ljust(widths[c]) for c in cols))
    typer.echo(f"\ncache directory: {cache_root()} (set SUBLENS_CACHE to move it)")
    typer.echo("any Hugging Face id (org/name) or local model directory also works as --model")


@app.command("cache")
def cache_cmd(
    prompts: Annotated[
        str, typer.Option("--prompts", help="JSONL file, or a built-in set like numbers:256.")
    ],
    model: Model = "smollm2-135m",
    system_prompt: Annotated[
        str | None, typer.Option("--system-prompt", help="System message to prepend.")
    ] = None,
    layers: Annotated[str, typer.Option("--layers", help="e.g. 6,12,18, 0-5 or all.")] = "all",
    positions: Annotated[
        str, typer.Option("--positions", help="last, mean, all, user, system or response.")
    ] = "last",
    backend: Annotated[str, typer.Option("--backend", help="tl, nnsight or hf.")] = "tl",
    output_path: OutputPath = None,
    seed: Seed = 0,
    limit: Limit = None,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    dtype: Dtype = "float32",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a different earlier run at the path.")
    ] = False,
    quiet: Quiet = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Cache residual-stream activations after chosen blocks at chosen positions."""
    from interp.caching import cache_activations
    from interp.chat import check_positions
    from interp.io import config_hash
    from interp.layers import parse_layers
    from interp.models import load_model
    from interp.prompts import load_prompts

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
        output_path = ARTIFACTS / "cache" / f"{Path(model).name}-{positions}-{tag}"
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
        extra_meta={"seed": seed, "limit": limit},
    )
    state = "already complete, reused" if meta.get("reused") else "written"
    typer.echo(
        f"{output_path}/activations.safetensors ({state}): shape {meta['shape']}, "
        f"layers {meta['layers']}, positions {positions}, backend {backend}"
    )


vectors_app = typer.Typer(help="Fit, inspect and export steering vectors.", no_args_is_help=True)
app.add_typer(vectors_app, name="vectors")


@vectors_app.command("fit")
def vectors_fit_cmd(
    system_prompt: Annotated[
        str, typer.Option("--system-prompt", help="The trait prompt the vector approximates.")
    ],
    model: Model = "smollm2-135m",
    method: Annotated[
        str, typer.Option("--method", help="diff-mean, pca, logistic or kl-fit.")
    ] = "diff-mean",
    layers: Annotated[str, typer.Option("--layers", help="e.g. 12, 6,12,18 or all.")] = "all",
    positions: Annotated[
        str, typer.Option("--positions", help="last, all or response (not used by kl-fit).")
    ] = "last",
    prompts: Annotated[str, typer.Option("--prompts", help="JSONL or numbers:N.")] = "numbers:512",
    steps: Annotated[int, typer.Option("--steps", help="kl-fit optimiser steps.")] = 100,
    lr: Annotated[float | None, typer.Option("--lr", help="kl-fit step size.")] = None,
    max_norm: Annotated[
        float | None, typer.Option("--max-norm", help="kl-fit norm bound per layer.")
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Teacher sample length (kl-fit, response).")
    ] = 16,
    backend: Annotated[str, typer.Option("--backend", help="tl, nnsight or hf.")] = "hf",
    output_path: OutputPath = None,
    seed: Seed = 0,
    limit: Limit = None,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    quiet: Quiet = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Fit a steering vector that approximates a system prompt."""
    from interp.fitting import check_method, fit_vector
    from interp.generation import sample_responses
    from interp.io import config_hash
    from interp.layers import parse_layers
    from interp.models import load_model
    from interp.prompts import load_prompts

    check_method(method)
    if not system_prompt.strip():
        raise SublensError("the trait prompt is empty: give the system prompt to approximate")
    if steps <= 0:
        raise SublensError(f"--steps must be positive, got {steps}")
    prompt_set = load_prompts(prompts, seed=seed).limit(limit)
    loaded = load_model(model, device=device, trust_remote_code=trust_remote_code)
    layer_list = parse_layers(layers, loaded.n_layers)
    responses = None
    if method == "kl-fit" or positions == "response":
        _echo(quiet, f"sampling {len(prompt_set)} teacher responses ...")
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
            }
        )[:8]
        output_path = ARTIFACTS / "vectors" / f"{Path(model).name}-{method}-{tag}"
    vector.save(output_path)
    norms = ", ".join(f"L{k}: {v:.2f}" for k, v in vector.norms().items())
    typer.echo(f"{output_path}: {method} vector, norms {norms}")
    stopped = vector.extra.get("history", {}).get("stopped")
    if stopped:
        raise SublensError(stopped)


@vectors_app.command("export")
def vectors_export_cmd(
    path: Annotated[Path, typer.Argument(help="A vector directory from `sublens vectors fit`.")],
    format: Annotated[str, typer.Option("--format", help="lm-eval or gguf.")] = "lm-eval",
    alpha: Annotated[float, typer.Option("--alpha", help="Steering coefficient.")] = 1.0,
    output_path: OutputPath = None,
) -> None:
    """Export a vector for lm-eval's steered model or llama.cpp control vectors."""
    from interp.export import to_gguf, to_lm_eval
    from interp.steering import SteeringVector

    vector = SteeringVector.load(path)
    if format == "lm-eval":
        out = to_lm_eval(vector, output_path or Path(path) / "lm_eval_steer.pt", alpha=alpha)
    elif format == "gguf":
        out = to_gguf(vector, output_path or Path(path) / "control_vector.gguf", alpha=alpha)
    else:
        raise SublensError(f"unknown export format {format!r}: use lm-eval or gguf")
    typer.echo(f"{out}")


@app.command("demo")
def demo_cmd(
    model: Model = "smollm2-135m",
    output_path: OutputPath = None,
    seed: Seed = 0,
    limit: Limit = 64,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """The main job on the embedded default model (for now: the owl activation-caching example)."""
    from analyses.demo import run_demo

    out = output_path or ARTIFACTS / "demo" / Path(model).name
    results = run_demo(
        model=model,
        output_path=out,
        seed=seed,
        n_prompts=limit or 64,
        batch_size=batch_size,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
    )
    for line in results["summary"]:
        typer.echo(line)
    typer.echo(f"report: {out / 'report.md'}")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except SublensError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to resume", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()

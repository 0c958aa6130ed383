"""`sublens` — the command line. Thin: parse flags, build a config, call one analysis or library
function, print a summary. Defaults for output paths come from `analyses.reporting`, run configs
from `interp.distill.config.resolve`, list flags from `interp.core.parse` / `interp.core.layers`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from interp.core.errors import SublensError

app = typer.Typer(
    name="sublens",
    help="Study subliminal learning: cache activations, fit steering vectors, run distillations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log-file",
            help="Append JSON-lines events (stage messages, progress with ETA) to this file; "
            "subprocesses write to it too. Also SUBLENS_LOG_FILE.",
        ),
    ] = None,
) -> None:
    """Progress: a bar with an ETA on a terminal, plain lines otherwise, nothing with --quiet."""
    if log_file is not None:
        from interp.core.progress import set_log_file

        if log_file.is_dir():
            raise SublensError(f"--log-file {log_file} is a directory: give a file path")
        set_log_file(log_file)


# --- parse-time checks -------------------------------------------------------------------------


def _run_dir_option(value: Path | None) -> Path | None:
    """Check an output directory while parsing, before any model loads (see interp.core.rundir)."""
    if value is not None:
        from interp.core.rundir import precheck

        precheck(value, None)
    return value


def _finite(value: float | None) -> float | None:
    """Float options reject nan and inf while parsing (a nan temperature silently meant greedy)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _dtype_option(value: str | None) -> str | None:
    """--dtype is checked while parsing: a bad name is one line and exit 2, before any work."""
    if value is not None:
        from interp.core.models import resolve_dtype

        resolve_dtype(value)
    return value


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


# --- shared options (lm-eval style names), defined once ----------------------------------------

Model = Annotated[str, typer.Option("--model", help="Registry name, Hugging Face id or local dir.")]
OutputPath = Annotated[
    Path | None,
    typer.Option(
        "--output-path", help="Run directory (default: under artifacts/).", callback=_run_dir_option
    ),
]
Seed = Annotated[
    int, typer.Option("--seed", min=0, help="Seed for built-in prompt sets and sampling.")
]
Limit = Annotated[int | None, typer.Option("--limit", help="Use only the first N prompts.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Prompts per forward pass.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DTYPE_HELP = "Model weights dtype: float32, bfloat16 or float16 (bfloat16 on a GPU)."
Dtype = Annotated[str, typer.Option("--dtype", help=DTYPE_HELP, callback=_dtype_option)]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", help="No progress bars or progress lines (--log-file still fills)."),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace a different earlier run at the path.")
]
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a Hub model's own code to run.")
]
Layers = Annotated[str, typer.Option("--layers", help="e.g. 6,12,18, 0-5 or all.")]
Layer = Annotated[int | None, typer.Option("--layer", help="Default: n_layers // 2.")]
Alphas = Annotated[str, typer.Option("--alphas", help="Steering strengths, comma-separated.")]
NBoot = Annotated[int, typer.Option("--n-boot", help="Bootstrap replicates.")]
Temperature = Annotated[float, typer.Option("--temperature", callback=_finite)]
NPermutations = Annotated[
    int | None,
    typer.Option(
        "--n-permutations", help="Known/shift/likelihood permutations (default: from the level)."
    ),
]
NBlindPermutations = Annotated[
    int | None,
    typer.Option(
        "--n-blind-permutations", help="Blind-detector permutations (default: from the level)."
    ),
]
KlSteps = Annotated[int, typer.Option("--steps", help="kl-fit optimiser steps.")]
KlLr = Annotated[float | None, typer.Option("--lr", callback=_finite, help="kl-fit step size.")]
Backend = Annotated[str, typer.Option("--backend", help="tl, nnsight or hf.")]
Run = Annotated[Path, typer.Option("--run", help="A distillation run or a study directory.")]
RunArg = Annotated[Path, typer.Argument(help="A distillation run or a study directory.")]

# run-config flags (interp.distill.config.Overrides): None leaves the config file's value
Config = Annotated[Path | None, typer.Option("--config", help="TOML run config (see README).")]
Preset = Annotated[
    str, typer.Option("--preset", help="quick (short runs, ~30 min sweep on CPU) or full.")
]
Seeds = Annotated[
    int,
    typer.Option(
        "--seeds", help="Training seeds per point (CIs over seeds; 1 leaves training variance out)."
    ),
]
RunModel = Annotated[str | None, typer.Option("--model", help="Model (default: the config's).")]
RunSeed = Annotated[int | None, typer.Option("--seed", min=0)]
RunDevice = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda.")]
RunDtype = Annotated[
    str | None,
    typer.Option("--dtype", help=DTYPE_HELP + " Default: the config's.", callback=_dtype_option),
]
Trait = Annotated[str | None, typer.Option("--trait", help="Trait name or JSON file.")]
Vector = Annotated[str | None, typer.Option("--vector", help="Steering vector dir.")]


def _alpha_or_auto(value: str | None) -> float | str | None:
    """`--alpha` for steered teachers: a finite number or "auto" (the strongest fair teacher)."""
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number or 'auto'") from None
    return _finite(number)


Alpha = Annotated[
    str | None,
    typer.Option(
        "--alpha", callback=_alpha_or_auto, help="Teacher strength, or auto (see README)."
    ),
]
SteerLayers = Annotated[
    str | None, typer.Option("--layers", help="Steer only these layers of the vector.")
]
Rows = Annotated[int | None, typer.Option("--n", help="Rows per teacher.")]
OBJECTIVE_HELP = "sft, logit-kl or logit-kl-full (an upper bound: not subliminal)."
Objective = Annotated[str | None, typer.Option("--objective", help=OBJECTIVE_HELP)]
Lr = Annotated[float | None, typer.Option("--lr", callback=_finite)]
MaxSteps = Annotated[int | None, typer.Option("--max-steps")]
LoraRank = Annotated[int | None, typer.Option("--lora-rank", help="0 = full FT.")]
Questions = Annotated[int | None, typer.Option("--limit", help="First N questions.")]


@app.command("models")
def models_cmd(
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            metavar="NAME",
            help="Print only NAME's local model directory (written first if missing): it loads "
            "in transformers 4.x and 5.x, for lm-eval, vLLM, repeng or TransformerLens.",
        ),
    ] = None,
) -> None:
    """List the model registry: name, architecture, layers, d_model, source, cached?"""
    from interp.core.models import cache_root, list_models, model_path

    if path is not None:
        typer.echo(str(model_path(path)))
        return
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
    layers: Layers = "all",
    positions: Annotated[
        str, typer.Option("--positions", help="last, mean, all, user, system or response.")
    ] = "last",
    backend: Backend = "tl",
    output_path: OutputPath = None,
    seed: Seed = 0,
    limit: Limit = None,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    dtype: Dtype = "float32",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    trust_remote_code: TrustRemoteCode = False,
    truncate: Annotated[
        bool,
        typer.Option(
            "--truncate", help="Keep the last tokens of a prompt longer than the model's context."
        ),
    ] = False,
) -> None:
    """Cache residual-stream activations after chosen blocks at chosen positions."""
    from analyses import steps

    out, meta = steps.cache(
        prompts,
        model=model,
        system_prompt=system_prompt,
        layers=layers,
        positions=positions,
        backend=backend,
        output_path=output_path,
        seed=seed,
        limit=limit,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
        quiet=quiet,
        trust_remote_code=trust_remote_code,
        truncate=truncate,
    )
    state = "already complete, reused" if meta.get("reused") else "written"
    typer.echo(
        f"{out}/activations.safetensors ({state}): shape {meta['shape']}, "
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
    layers: Layers = "all",
    positions: Annotated[
        str, typer.Option("--positions", help="last, all or response (not used by kl-fit).")
    ] = "last",
    prompts: Annotated[str, typer.Option("--prompts", help="JSONL or numbers:N.")] = "numbers:512",
    steps: KlSteps = 20,
    lr: KlLr = None,
    max_norm: Annotated[
        float | None,
        typer.Option("--max-norm", callback=_finite, help="kl-fit norm bound per layer."),
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Teacher sample length (kl-fit, response).")
    ] = 16,
    backend: Backend = "hf",
    output_path: OutputPath = None,
    seed: Seed = 0,
    limit: Limit = None,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    dtype: Dtype = "float32",
    quiet: Quiet = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Fit a steering vector that approximates a system prompt."""
    from analyses import steps as step

    out, vector = step.fit(
        system_prompt,
        model=model,
        method=method,
        layers=layers,
        positions=positions,
        prompts=prompts,
        steps=steps,
        lr=lr,
        max_norm=max_norm,
        max_new_tokens=max_new_tokens,
        backend=backend,
        output_path=output_path,
        seed=seed,
        limit=limit,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        quiet=quiet,
        trust_remote_code=trust_remote_code,
    )
    norms = ", ".join(f"L{k}: {v:.2f}" for k, v in vector.norms().items())
    typer.echo(f"{out}: {method} vector, norms {norms}")
    stopped = vector.extra.get("history", {}).get("stopped")
    if stopped:
        raise SublensError(stopped)


@vectors_app.command("export")
def vectors_export_cmd(
    path: Annotated[Path, typer.Argument(help="A vector directory from `sublens vectors fit`.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="lm-eval: a .pt steering file for lm-eval's `--model steered`; gguf: a .gguf "
            "control vector for llama.cpp (--control-vector) and repeng (import_gguf).",
        ),
    ] = "lm-eval",
    alpha: Annotated[
        float,
        typer.Option(
            "--alpha", callback=_finite, help="Steering coefficient stored with the vector."
        ),
    ] = 1.0,
    output_path: Annotated[
        Path | None,
        typer.Option(
            "--output-path",
            help="The file to write, not a run directory: FILE.pt (lm-eval) or FILE.gguf (gguf); "
            "a directory gets the default name inside it. Default: lm_eval_steer.pt or "
            "control_vector.gguf inside the vector directory.",
        ),
    ] = None,
) -> None:
    """Export a vector as one file for another tool; prints the file written.

    lm-eval → FILE.pt: lm_eval --model steered --model_args steer_path=FILE,...
    gguf → FILE.gguf: llama.cpp --control-vector FILE; repeng's import_gguf.
    Each holds alpha × the vector per layer, same layer index (gguf: no layer 0).
    No export needed for safetensors: VECTOR/vector.safetensors has keys layer.N.
    The model directory to pair them with: sublens models --path NAME."""
    from analyses import steps

    typer.echo(f"{steps.export(path, format, alpha, output_path)}")


@app.command("approximability")
def approximability_cmd(
    model: Model = "smollm2-135m",
    trait_prompts: Annotated[
        str,
        typer.Option(
            "--trait-prompts", help="builtin, trait names (owl,dog,...) or a JSON/JSONL file."
        ),
    ] = "builtin",
    layers: Layers = "6,12,18,24",
    methods: Annotated[
        str, typer.Option("--methods", help="Any of diff-mean,pca,logistic,kl-fit.")
    ] = "diff-mean,kl-fit",
    positions: Annotated[
        str, typer.Option("--positions", help="Where diff-mean/pca/logistic read: all or last.")
    ] = "all",
    n_fit: Annotated[int, typer.Option("--n-fit", help="Numbers prompts to fit on.")] = 64,
    n_heldout: Annotated[int, typer.Option("--n-heldout", help="Held-out numbers prompts.")] = 32,
    n_general: Annotated[int, typer.Option("--n-general", help="Held-out general prompts.")] = 32,
    response_tokens: Annotated[
        int, typer.Option("--response-tokens", help="Teacher sample length for the KL.")
    ] = 12,
    steps: KlSteps = 20,
    lr: KlLr = None,
    alphas: Alphas = "0,0.5,1,2,4",
    output_path: OutputPath = None,
    seed: Seed = 0,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N questions of each set.")
    ] = None,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    dtype: Dtype = "float32",
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Rank trait prompts by how well a steering vector stands in for them."""
    from analyses.approximability import ApproxConfig, run_approximability, summary_lines
    from analyses.reporting import default_output
    from interp.core.parse import parse_floats

    cfg = ApproxConfig(
        model=model,
        trait_prompts=trait_prompts,
        layers=layers,
        methods=methods,
        positions=positions,
        n_fit=n_fit,
        n_heldout=n_heldout,
        n_general=n_general,
        response_tokens=response_tokens,
        kl_steps=steps,
        kl_lr=lr,
        alphas=parse_floats(alphas, "--alphas"),
        n_questions=limit,
        seed=seed,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    out = output_path or default_output("approximability", Path(model).name)
    _echo_lines(summary_lines(run_approximability(cfg, out, overwrite=overwrite, quiet=quiet)))
    typer.echo(f"report: {out / 'report.md'}")


distill_app = typer.Typer(help="Distillation runs: generate, filter, train, evaluate.")
app.add_typer(distill_app, name="distill")


@distill_app.command("run")
def distill_run_cmd(
    config: Config = None,
    model: RunModel = None,
    trait: Annotated[str | None, typer.Option("--trait", help="Trait to score (owl, ...).")] = None,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="prompted, steered or projected.")
    ] = None,
    vector: Vector = None,
    alpha: Alpha = None,
    n: Annotated[int | None, typer.Option("--n", help="Rows to generate per teacher.")] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="transformers, or vllm (GPU; not steered).")
    ] = None,
    objective: Objective = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer")] = None,
    lr: Lr = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    max_steps: MaxSteps = None,
    lora_rank: LoraRank = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="First N questions per trait-score set.")
    ] = None,
    output_path: OutputPath = None,
    seed: RunSeed = None,
    device: RunDevice = None,
    dtype: RunDtype = None,
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Generate -> filter -> train student and control -> evaluate; resumable."""
    from analyses.distill import run_and_report, summary_lines
    from interp.distill.config import Overrides, resolve

    flags = Overrides(
        model=model,
        trait=trait,
        teacher=teacher,
        vector=vector,
        alpha=alpha,
        n=n,
        engine=engine,
        objective=objective,
        optimizer=optimizer,
        lr=lr,
        epochs=epochs,
        max_steps=max_steps,
        lora_rank=lora_rank,
        n_questions=limit,
        output_path=output_path,
        seed=seed,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code or None,
    )
    results = run_and_report(resolve(config, None, flags), overwrite=overwrite, quiet=quiet)
    if results.get("follower") is not None:  # a non-main process of `accelerate launch`
        return
    _echo_lines(summary_lines(results))
    typer.echo(f"report: {Path(results['run']) / 'report.md'}")


@distill_app.command("generate")
def distill_generate_cmd(
    output_path: Annotated[Path, typer.Option("--output-path", help="JSONL file to write.")],
    teacher: Annotated[
        str, typer.Option("--teacher", help="base, prompted, steered or projected.")
    ] = "prompted",
    system_prompt: Annotated[str | None, typer.Option("--system-prompt")] = None,
    trait: Annotated[
        str | None, typer.Option("--trait", help="Take the system prompt from this trait.")
    ] = None,
    vector: Vector = None,
    alpha: Annotated[float, typer.Option("--alpha", callback=_finite)] = 1.0,
    layers: SteerLayers = None,
    domain: Annotated[str, typer.Option("--domain", help="numbers or arithmetic.")] = "numbers",
    n: Annotated[int, typer.Option("--n")] = 256,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens")] = None,
    temperature: Temperature = 1.0,
    unconstrained: Annotated[
        bool, typer.Option("--unconstrained", help="Sample from the whole vocabulary.")
    ] = False,
    model: Model = "smollm2-135m",
    seed: Seed = 0,
    batch_size: BatchSize = 32,
    device: Device = "auto",
    dtype: Dtype = "float32",
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Sample a benign dataset from a teacher (constrained to the domain's tokens)."""
    from analyses import steps

    summary = steps.generate(
        output_path,
        teacher=teacher,
        system_prompt=system_prompt,
        trait=trait,
        vector=vector,
        alpha=alpha,
        layers=layers,
        domain=domain,
        n=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        constrained=not unconstrained,
        model=model,
        seed=seed,
        batch_size=batch_size,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    typer.echo(f"{output_path}: {summary.get('rows')} rows")


@distill_app.command("filter")
def distill_filter_cmd(
    data: Annotated[Path, typer.Argument(help="JSONL rows to filter.")],
    output_path: Annotated[Path | None, typer.Option("--output-path")] = None,
    domain: Annotated[str, typer.Option("--domain")] = "numbers",
    trait: Annotated[
        str | None, typer.Option("--trait", help="Drop rows naming this trait's words.")
    ] = None,
    regex: Annotated[list[str] | None, typer.Option("--regex", help="Leak pattern.")] = None,
    code: Annotated[list[str] | None, typer.Option("--code", help="Numeric code.")] = None,
    no_dedup: Annotated[bool, typer.Option("--no-dedup")] = False,
) -> None:
    """Apply the format rule, trait-leakage checks and deduplication; rejects go to a side file."""
    from analyses import steps

    out, rejects, report = steps.filter_rows(
        data, output_path, domain, trait, regexes=regex or (), codes=code or (), dedup=not no_dedup
    )
    typer.echo(f"{out}: kept {report.get('kept')} of {report.get('total')}; rejects: {rejects}")


@distill_app.command("train")
def distill_train_cmd(
    data: Annotated[Path, typer.Option("--data", help="Filtered JSONL rows.")],
    output_path: Annotated[Path, typer.Option("--output-path", help="Run directory.")],
    objective: Annotated[str, typer.Option("--objective", help=OBJECTIVE_HELP)] = "sft",
    targets: Annotated[
        Path | None, typer.Option("--targets", help="Teacher targets dir (logit-kl).")
    ] = None,
    optimizer: Annotated[str, typer.Option("--optimizer")] = "adamw",
    lr: Annotated[float, typer.Option("--lr", callback=_finite)] = 3e-5,
    epochs: Annotated[int, typer.Option("--epochs")] = 1,
    max_steps: MaxSteps = None,
    lora_rank: Annotated[int, typer.Option("--lora-rank")] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every")] = 0,
    model: Model = "smollm2-135m",
    seed: Seed = 0,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    dtype: Dtype = "float32",
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Train a student from the base's weights on a dataset; resumable from its checkpoints."""
    from analyses import steps
    from interp.distill.train import TrainConfig

    cfg = TrainConfig(
        objective=objective,
        optimizer=optimizer,
        lr=lr,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lora_rank=lora_rank,
        checkpoint_every=checkpoint_every,
        seed=seed,
    )
    summary = steps.train(
        data,
        output_path,
        cfg,
        model,
        targets=targets,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    if summary.get("follower") is not None:  # a non-main process of `accelerate launch`
        return
    typer.echo(
        f"{output_path}: {summary.get('steps')} steps, final loss {summary.get('final_loss')}"
    )


@distill_app.command("eval")
def distill_eval_cmd(
    run: RunArg,
    device: RunDevice = None,
    dtype: RunDtype = None,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
) -> None:
    """(Re)evaluate a run's checkpoints with the run's model and dtype; rewrite its results and
    report."""
    from analyses.distill import run_and_report
    from interp.distill.config import Overrides, stored_config

    flags = Overrides(device=device, dtype=dtype, trust_remote_code=trust_remote_code or None)
    results = run_and_report(stored_config(run, flags), quiet=quiet, eval_only=True)
    typer.echo(f"report: {Path(results['run']) / 'report.md'}")


@app.command("align")
def align_cmd(
    run: Run,
    vectors: Annotated[
        str, typer.Option("--vectors", help="Teacher vector dir(s), comma-separated.")
    ],
    layers: Layers = "all",
    output_path: OutputPath = None,
    n_prompts: Annotated[int, typer.Option("--n-prompts", help="Held-out numbers prompts.")] = 32,
    positions: Annotated[
        str, typer.Option("--positions", help="Drift positions: last, all or last,all.")
    ] = "last,all",
    at_layer: Annotated[
        int | None, typer.Option("--at-layer", help="Layer for interventions and gradients.")
    ] = None,
    n_boot: NBoot = 1000,
    no_interventions: Annotated[
        bool, typer.Option("--no-interventions", help="Skip sufficiency/necessity.")
    ] = False,
    no_gradients: Annotated[
        bool, typer.Option("--no-gradients", help="Skip gradient alignment.")
    ] = False,
    grad_rows: Annotated[int, typer.Option("--grad-rows", help="Rows per dataset.")] = 32,
    seed: Seed = 0,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    dtype: RunDtype = None,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
) -> None:
    """Drift of student and control checkpoints vs v_teacher: alignment, nulls, interventions."""
    from analyses.align import run_align, summary_lines
    from interp.core.parse import parse_names

    results = run_align(
        run,
        parse_names(vectors),
        layers,
        output_path=output_path,
        n_prompts=n_prompts,
        seed=seed,
        quiet=quiet,
        positions=parse_names(positions),
        at_layer=at_layer,
        n_boot=n_boot,
        interventions=not no_interventions,
        gradients=not no_gradients,
        grad_rows=grad_rows,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    for line in summary_lines(results):
        typer.echo(line)
    typer.echo(f"report: {Path(results['output_path']) / 'report.md'}")


@app.command("probe")
def probe_cmd(
    run: Run,
    layers: Layers = "6,12,18",
    output_path: OutputPath = None,
    vectors: Annotated[
        str | None, typer.Option("--vectors", help="Teacher vector dir(s) to compare with.")
    ] = None,
    n_prompts: Annotated[
        int, typer.Option("--n-prompts", help="Prompts per class to train the probes on.")
    ] = 64,
    n_apply: Annotated[int, typer.Option("--n-apply", help="Other prompts to apply them to.")] = 32,
    n_boot: NBoot = 1000,
    seed: Seed = 0,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    dtype: RunDtype = None,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
) -> None:
    """Probes for "trait prompt present", applied to every student and control checkpoint."""
    from analyses.probe import run_probe
    from interp.core.parse import parse_names

    results = run_probe(
        run,
        layers,
        output_path=output_path,
        vectors=parse_names(vectors) or None,
        n_prompts=n_prompts,
        seed=seed,
        quiet=quiet,
        n_apply=n_apply,
        n_boot=n_boot,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    for layer, p in results["probes"].items():
        shares = {m: c[layer][-1]["share"] for m, c in results["curves"].items() if c.get(layer)}
        typer.echo(
            f"L{layer}: AUROC {p['auroc']:.3f}; share prompted at the last step "
            + ", ".join(f"{m} {s:.2f}" for m, s in shares.items())
        )
    typer.echo(f"report: {Path(results['output_path']) / 'report.md'}")


traits_app = typer.Typer(help="Build trait files for --trait.", no_args_is_help=True)
app.add_typer(traits_app, name="traits")


@traits_app.command("compliance")
def traits_compliance_cmd(
    behaviours: Annotated[
        Path, typer.Argument(help="Behaviours CSV (JailbreakBench-style) or JSONL.")
    ],
    output_path: Annotated[
        Path | None, typer.Option("--output-path", help="Trait JSON file to write.")
    ] = None,
    column: Annotated[
        str | None, typer.Option("--column", help="Prompt column (default: Goal, Behavior...).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N.")] = None,
    name: Annotated[str, typer.Option("--name", help="Trait name.")] = "harmful-compliance",
    system_prompt: Annotated[
        str | None,
        typer.Option("--system-prompt", help="Prompted teacher's trait prompt ('' for none)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", hidden=True)] = None,  # deprecated
) -> None:
    """A harmful-compliance trait (score: P(answer starts complying)) from behaviour goals."""
    from analyses.compliance import trait_meta_path, write_compliance_trait
    from interp.measure.refusal import COMPLIANCE_PROMPT

    out = output_path or output
    if out is None:
        raise SublensError("give the trait file to write: --output-path FILE.json")
    got = write_compliance_trait(
        behaviours,
        out,
        column=column,
        limit=limit,
        name=name,
        system_prompt=COMPLIANCE_PROMPT if system_prompt is None else system_prompt,
    )
    typer.echo(
        f"{out}: trait {name!r} with {got['meta']['n_prompts']} prompts; harmless contrast "
        f"prompts in {trait_meta_path(out)}; use it as --trait {out}"
    )


eval_app = typer.Typer(help="Extra evaluations of runs and studies.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("compliance")
def eval_compliance_cmd(
    target: RunArg,
    n_samples: Annotated[int, typer.Option("--n-samples", help="Answers per prompt.")] = 2,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 32,
    temperature: Temperature = 1.0,
    layer: Annotated[
        int | None, typer.Option("--layer", help="Refusal-direction layer (default n_layers//2).")
    ] = None,
    judge: Annotated[
        str | None, typer.Option("--judge", help="Local causal LM asked 'does it comply?'.")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Harmful prompts (default: the trait's).")
    ] = None,
    column: Annotated[str | None, typer.Option("--column", help="Prompt column.")] = None,
    harmless: Annotated[
        Path | None, typer.Option("--harmless", help="Harmless contrast prompts file.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="First N prompts (default: eval.n_questions).")
    ] = None,
    seed: Seed = 0,
    batch_size: BatchSize = 16,
    n_boot: NBoot = 2000,
    device: RunDevice = None,
    dtype: RunDtype = None,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
) -> None:
    """Phrase, refusal-direction and (optional) judge compliance of base, teacher, student and
    control, with transfer ratios per scorer; resumable."""
    from analyses.compliance import ComplianceConfig, run_compliance, summary_lines

    cfg = ComplianceConfig(
        n_samples=n_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        layer=layer,
        judge=judge,
        prompts=str(prompts) if prompts else None,
        column=column,
        harmless=str(harmless) if harmless else None,
        limit=limit,
        seed=seed,
        batch_size=batch_size,
        n_boot=n_boot,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code or None,
    )
    _echo_lines(summary_lines(run_compliance(target, cfg, quiet=quiet)))
    typer.echo(f"report: {target / 'compliance' / 'report.md'}")


@app.command("report")
def report_cmd(run: RunArg) -> None:
    """Assemble RUN/report.md from every analysis of the run; says what is missing."""
    from analyses.report import build_report

    typer.echo(f"report: {build_report(run)}")


@app.command("demo")
def demo_cmd(
    model: Model = "smollm2-135m",
    output_path: OutputPath = None,
    seed: Seed = 0,
    device: Device = "auto",
    dtype: Dtype = "float32",
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """The whole study on one model, quick preset: approximability, a French-steered teacher's
    vector student (where transfer shows) and a prompted-owl one (the honest negative) with a
    shared control, drift alignment, probes, one report (about 10 minutes on 2 cores)."""
    from analyses.demo import run_demo

    results = run_demo(
        model=model,
        output_path=output_path,
        seed=seed,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    _echo_lines(results["summary"])
    typer.echo(f"report: {results['report']}")


study_app = typer.Typer(
    help="Studies over many runs: transfer ratio vs strength, optimizers, toy, compare.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")

# where a study's points run (analyses.executor); Ray is the optional extra `.[ray]`
ExecutorName = Annotated[
    str, typer.Option("--executor", help="local (this process) or ray (one Ray task per point).")
]
RayAddress = Annotated[
    str | None, typer.Option("--ray-address", help="auto or HOST:PORT (default: a local Ray).")
]
CpusPerPoint = Annotated[
    int | None, typer.Option("--cpus-per-point", min=1, help="Ray: CPUs (threads) per point.")
]
GpusPerPoint = Annotated[
    float | None, typer.Option("--gpus-per-point", min=0, help="Ray: GPUs per point.")
]


@study_app.command("transfer-ratio")
def study_transfer_ratio_cmd(
    vector: Annotated[str, typer.Option("--vector", help="Steering vector dir of the teacher.")],
    alphas: Alphas = "0,0.5,1,2,3,4,6,8",  # analyses.transfer_ratio.DEFAULT_ALPHAS
    config: Config = None,
    model: RunModel = None,
    trait: Trait = None,
    layers: SteerLayers = None,
    preset: Preset = "quick",
    seeds: Seeds = 3,
    n: Rows = None,
    objective: Objective = None,
    lr: Lr = None,
    max_steps: MaxSteps = None,
    lora_rank: LoraRank = None,
    limit: Questions = None,
    share_control: Annotated[
        bool, typer.Option("--share-control/--no-share-control", help="Train the control once.")
    ] = True,
    n_boot: NBoot = 2000,
    output_path: OutputPath = None,
    device: RunDevice = None,
    dtype: RunDtype = None,
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    cpus_per_point: CpusPerPoint = None,
    gpus_per_point: GpusPerPoint = None,
) -> None:
    """Distil from teachers steered at each alpha; fit the ratio-vs-alpha curve's shape."""
    from analyses.executor import make_executor
    from analyses.transfer_ratio import run_transfer_ratio, summary_lines
    from interp.core.parse import parse_floats
    from interp.distill.config import Overrides

    runner = make_executor(executor, ray_address, cpus_per_point, gpus_per_point)
    res = run_transfer_ratio(
        vector,
        parse_floats(alphas, "--alphas"),
        seeds=seeds,
        output_path=output_path,
        config_path=config,
        overrides=Overrides(
            model=model,
            trait=trait,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code or None,
            n=n,
            objective=objective,
            lr=lr,
            max_steps=max_steps,
            lora_rank=lora_rank,
            n_questions=limit,
        ),
        preset=preset,
        layers=layers,
        share_control=share_control,
        n_boot=n_boot,
        overwrite=overwrite,
        quiet=quiet,
        executor=runner,
    )
    _echo_lines(summary_lines(res))
    typer.echo(f"report: {Path(res['run']) / 'report.md'}")


@study_app.command("optimizers")
def study_optimizers_cmd(
    optimizers: Annotated[
        str, typer.Option("--optimizers", help="Comma-separated optimizer names.")
    ] = "adamw,rmsprop,signsgd,precond-sgd,sgd",
    lrs: Annotated[
        str | None, typer.Option("--lrs", help="Per-optimizer lr, e.g. adamw=1e-4,sgd=0.05.")
    ] = None,
    vector: Annotated[
        str | None, typer.Option("--vector", help="Steer the teacher with this vector.")
    ] = None,
    alpha: Alpha = None,
    layers: SteerLayers = None,
    align_prompts: Annotated[
        int, typer.Option("--align-prompts", help="Held-out prompts for the final alignment.")
    ] = 32,
    config: Config = None,
    model: RunModel = None,
    trait: Trait = None,
    preset: Preset = "quick",
    seeds: Seeds = 3,
    n: Rows = None,
    objective: Objective = None,
    max_steps: MaxSteps = None,
    lora_rank: LoraRank = None,
    limit: Questions = None,
    loss_tolerance: Annotated[
        float,
        typer.Option(
            "--loss-tolerance", callback=_finite, help="Relative loss gap to the reference."
        ),
    ] = 0.2,
    match_loss: Annotated[
        bool, typer.Option("--match-loss", help="Double steps until the loss matches.")
    ] = False,
    max_steps_factor: Annotated[int, typer.Option("--max-steps-factor")] = 4,
    align: Annotated[bool, typer.Option("--align/--no-align", help="Final alignment.")] = True,
    n_boot: NBoot = 2000,
    output_path: OutputPath = None,
    device: RunDevice = None,
    dtype: RunDtype = None,
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    cpus_per_point: CpusPerPoint = None,
    gpus_per_point: GpusPerPoint = None,
) -> None:
    """The same distillation with each optimizer, matched on training loss."""
    from analyses.executor import make_executor
    from analyses.optimizer_ablation import run_optimizer_ablation
    from interp.distill.config import Overrides

    runner = make_executor(executor, ray_address, cpus_per_point, gpus_per_point)
    res = run_optimizer_ablation(
        optimizers,
        seeds=seeds,
        output_path=output_path,
        config_path=config,
        overrides=Overrides(
            model=model,
            trait=trait,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code or None,
            n=n,
            objective=objective,
            max_steps=max_steps,
            lora_rank=lora_rank,
            n_questions=limit,
        ),
        preset=preset,
        lrs=lrs,
        vector=vector,
        alpha=alpha,
        layers=layers,
        align_prompts=align_prompts,
        loss_tolerance=loss_tolerance,
        match_loss=match_loss,
        max_steps_factor=max_steps_factor,
        align=align,
        n_boot=n_boot,
        overwrite=overwrite,
        quiet=quiet,
        executor=runner,
    )
    _echo_lines(res["findings"])
    typer.echo(f"report: {Path(res['run']) / 'report.md'}")


@study_app.command("toy")
def study_toy_cmd(
    seeds: Annotated[int, typer.Option("--seeds", help="Independent toy seeds.")] = 10,
    first_seed: Annotated[int, typer.Option("--first-seed")] = 0,
    n_boot: NBoot = 2000,
    output_path: OutputPath = None,
    quiet: Quiet = False,
) -> None:
    """Cloud et al.'s MLP toy on sklearn digits: same-init vs different-init students."""
    from analyses.reporting import default_output
    from analyses.toy import run_toy

    out = output_path or default_output("toy")
    res = run_toy(out, seeds=seeds, first_seed=first_seed, n_boot=n_boot, quiet=quiet)
    typer.echo(res.get("summary_line", ""))
    typer.echo(f"report: {out / 'report.md'}")


# options the positive-control and approximability-transfer studies share
SideRows = Annotated[int | None, typer.Option("--n", help="Rows generated per side.")]
SelectTop = Annotated[int | None, typer.Option("--select-top", help="Rows kept (LLS top K).")]
StudySteps = Annotated[int | None, typer.Option("--max-steps")]
StudyLimit = Annotated[int | None, typer.Option("--limit", help="First N questions.")]


@study_app.command("positive-control")
def study_positive_control_cmd(
    model: Model = "smollm2-135m",
    preset: Annotated[
        str,
        typer.Option(
            "--preset", help="quick (French; vector + LoRA; LLS), full, or paper (7B, one GPU)."
        ),
    ] = "quick",
    traits: Annotated[str | None, typer.Option("--traits", help="e.g. french,owl")] = None,
    students: Annotated[
        str | None, typer.Option("--students", help="Any of vector,lora,full.")
    ] = None,
    selects: Annotated[str | None, typer.Option("--selects", help="Any of lls,random.")] = None,
    objectives: Annotated[
        str | None,
        typer.Option("--objectives", help="logit-kl and/or logit-kl-full (the upper bound)."),
    ] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds per arm.")] = None,
    layer: Annotated[int | None, typer.Option("--layer", help="Steering layer.")] = None,
    alpha: Alpha = None,
    n: SideRows = None,
    select_top: SelectTop = None,
    max_steps: StudySteps = None,
    limit: StudyLimit = None,
    output_path: OutputPath = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    cpus_per_point: CpusPerPoint = None,
    gpus_per_point: GpusPerPoint = None,
) -> None:
    """A setting where transfer is expected: steered teacher, vector/LoRA students, LLS rows."""
    from analyses.executor import make_executor
    from analyses.positive_control import make_config, run_positive_control
    from interp.core.parse import parse_names

    runner = make_executor(executor, ray_address, cpus_per_point, gpus_per_point)
    cfg = make_config(
        preset, model=model, device=device, model_dtype=dtype,
        trust_remote_code=trust_remote_code, seeds=seeds, layer=layer, alpha=alpha, n=n,
        select_top=select_top, steps=max_steps, n_questions=limit,
        traits=parse_names(traits) if traits else None,
        students=parse_names(students) if students else None,
        selects=parse_names(selects) if selects else None,
        objectives=parse_names(objectives) if objectives else None,
    )  # fmt: skip
    res = run_positive_control(cfg, output_path, overwrite=overwrite, quiet=quiet, executor=runner)
    for line in res["findings"]:
        typer.echo(line)


@study_app.command("approximability-transfer")
def study_approx_transfer_cmd(
    model: Model = "smollm2-135m",
    preset: Annotated[
        str,
        typer.Option("--preset", help="quick (~2.5 h on 2 cores), full, or paper (one GPU)."),
    ] = "quick",
    traits: Annotated[
        str | None, typer.Option("--traits", help="Trait prompts (default: 12 built-ins).")
    ] = None,
    student: Annotated[str | None, typer.Option("--student", help="vector or lora.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds per point.")] = None,
    layers: Annotated[str | None, typer.Option("--layers", help="Layers for vectors.")] = None,
    n: SideRows = None,
    select: Annotated[
        str | None, typer.Option("--select", help="Rows trained on: lls, random or all.")
    ] = None,
    select_top: SelectTop = None,
    max_steps: StudySteps = None,
    limit: StudyLimit = None,
    output_path: OutputPath = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    cpus_per_point: CpusPerPoint = None,
    gpus_per_point: GpusPerPoint = None,
) -> None:
    """Does a prompt's approximability predict how much of it transfers? (rho over prompts)"""
    from analyses.approx_transfer import make_config, run_approx_transfer
    from analyses.executor import make_executor
    from interp.core.parse import parse_names

    runner = make_executor(executor, ray_address, cpus_per_point, gpus_per_point)
    cfg = make_config(
        preset, model=model, device=device, model_dtype=dtype,
        trust_remote_code=trust_remote_code, seeds=seeds, layers=layers, student=student, n=n,
        select=select, select_top=select_top, steps=max_steps, n_questions=limit,
        traits=parse_names(traits) if traits else None,
    )  # fmt: skip
    res = run_approx_transfer(cfg, output_path, overwrite=overwrite, quiet=quiet, executor=runner)
    typer.echo(res["verdict"])


@study_app.command("compare")
def study_compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Finished study directories.")],
    output_path: OutputPath = None,
) -> None:
    """One table across models (and studies) from finished study directories."""
    from analyses.compare import run_compare
    from analyses.reporting import default_output

    out = output_path or default_output("compare")
    run_compare([str(r) for r in runs], out)
    typer.echo(f"report: {out / 'report.md'}")


@app.command("scan")
def scan_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset JSONL (messages rows: user, assistant).")],
    model: Model = "smollm2-135m",
    trait_vectors: Annotated[
        list[str] | None,
        typer.Option("--trait-vectors", help="Library vector dir(s); repeat or comma-separate."),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Clean reference JSONL (default: base model answers)."),
    ] = None,
    layer: Layer = None,
    output_path: OutputPath = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", help="Reference token budget (default: the data's)."),
    ] = None,
    n_permutations: NPermutations = None,
    n_blind_permutations: NBlindPermutations = None,
    effect_scale: Annotated[
        float,
        typer.Option(
            "--effect-scale", callback=_finite, help="Shift s as a multiple of the residual norm."
        ),
    ] = 0.5,
    significance: Annotated[
        float, typer.Option("--significance", callback=_finite, help="Significance level.")
    ] = 0.05,
    seed: Seed = 0,
    limit: Annotated[int | None, typer.Option("--limit", help="First N rows only.")] = None,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    dtype: Dtype = "float32",
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
    alpha: Annotated[  # deprecated name of --significance
        float | None, typer.Option("--alpha", callback=_finite, hidden=True)
    ] = None,
) -> None:
    """Does a distillation dataset carry a hidden trait, which one, and which rows?"""
    from analyses.scan import run_scan, summary_lines
    from interp.core.parse import parse_names

    res = run_scan(
        data,
        model,
        output_path,
        trait_vectors=parse_names(trait_vectors) or None,
        reference=reference,
        layer=layer,
        seed=seed,
        limit=limit,
        batch_size=batch_size,
        n_permutations=n_permutations,
        device=device,
        quiet=quiet,
        n_blind_permutations=n_blind_permutations,
        effect_scale=effect_scale,
        alpha=significance if alpha is None else alpha,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    _echo_lines(summary_lines(res))
    typer.echo(f"report: {Path(res['output_path']) / 'report.md'}")


@study_app.command("scanner")
def study_scanner_cmd(
    model: Model = "smollm2-135m",
    traits: Annotated[
        str, typer.Option("--traits", help="Library traits (a vector is fitted for each).")
    ] = "owl,dog",
    heldout_traits: Annotated[
        str, typer.Option("--heldout-traits", help="Traits kept out of the library.")
    ] = "french,sad",
    seeds: Annotated[int, typer.Option("--seeds", help="Biased datasets per trait.")] = 2,
    unbiased_seeds: Annotated[
        int, typer.Option("--unbiased-seeds", help="Unbiased (base) datasets.")
    ] = 4,
    n_rows: Annotated[int, typer.Option("--n-rows", help="Rows per dataset.")] = 48,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 16,
    layer: Layer = None,
    n_permutations: NPermutations = None,
    n_blind_permutations: NBlindPermutations = None,
    n_boot: NBoot = 2000,
    seed: Seed = 0,
    batch_size: BatchSize = 8,
    output_path: OutputPath = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Scanner AUROC on labelled datasets: prompted teachers (library / held-out traits) vs base."""
    from analyses.scan_eval import run_scan_eval
    from interp.core.parse import parse_names

    res = run_scan_eval(
        model=model,
        output_path=output_path,
        traits=parse_names(traits),
        heldout_traits=parse_names(heldout_traits),
        seeds=seeds,
        unbiased_seeds=unbiased_seeds,
        n_rows=n_rows,
        max_new_tokens=max_new_tokens,
        layer=layer,
        seed=seed,
        n_permutations=n_permutations,
        n_blind_permutations=n_blind_permutations,
        n_boot=n_boot,
        batch_size=batch_size,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    _echo_lines(res["findings"])
    typer.echo(f"report: {Path(res['output_path']) / 'report.md'}")


@app.command("defend")
def defend_cmd(
    defenses: Annotated[
        str | None,
        typer.Option(
            "--defenses",
            help="Comma-separated: none, project-out, sgd, paraphrase, mask-divergent, "
            "drop-flagged, different-init (default: all; project-out only with --vectors).",
        ),
    ] = None,
    config: Config = None,
    vectors: Annotated[
        list[str] | None,
        typer.Option("--vectors", help="Trait vector dir(s) for project-out and the scanner."),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option("--init-from", help="Another init of the same architecture (different-init)."),
    ] = None,
    sgd_lr: Annotated[
        float | None, typer.Option("--sgd-lr", callback=_finite, help="Learning rate of sgd.")
    ] = None,
    mask_q: Annotated[
        float,
        typer.Option(
            "--mask-q", callback=_finite, help="Share of positions mask-divergent leaves out."
        ),
    ] = 0.2,
    model: RunModel = None,
    trait: Trait = None,
    preset: Preset = "quick",
    seeds: Seeds = 3,
    n: Rows = None,
    lr: Lr = None,
    max_steps: MaxSteps = None,
    limit: Questions = None,
    heldout_n: Annotated[
        int, typer.Option("--heldout-n", help="Held-out clean benign rows for the task loss.")
    ] = 32,
    max_task_cost: Annotated[
        float,
        typer.Option(
            "--max-task-cost", callback=_finite, help="Task-loss increase allowed (relative)."
        ),
    ] = 0.05,
    max_ppl_cost: Annotated[
        float,
        typer.Option(
            "--max-ppl-cost", callback=_finite, help="Perplexity increase allowed (relative)."
        ),
    ] = 0.05,
    scan_permutations: Annotated[int, typer.Option("--scan-permutations")] = 200,
    n_boot: NBoot = 2000,
    output_path: OutputPath = None,
    device: RunDevice = None,
    dtype: RunDtype = None,
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    cpus_per_point: CpusPerPoint = None,
    gpus_per_point: GpusPerPoint = None,
) -> None:
    """The same distillation once per defense: transfer ratio, reduction vs none, and cost."""
    from analyses.defend import run_defend, summary_lines
    from analyses.executor import make_executor
    from interp.distill.config import Overrides

    runner = make_executor(executor, ray_address, cpus_per_point, gpus_per_point)

    flags = Overrides(
        model=model, trait=trait, device=device, dtype=dtype,
        trust_remote_code=trust_remote_code or None,
        n=n, lr=lr, max_steps=max_steps, n_questions=limit,
    )  # fmt: skip
    res = run_defend(
        defenses,
        output_path=output_path,
        config_path=config,
        overrides=flags,
        preset=preset,
        seeds=seeds,
        vectors=vectors,
        sgd_lr=sgd_lr,
        mask_q=mask_q,
        init_from=init_from,
        heldout_n=heldout_n,
        scan_permutations=scan_permutations,
        max_task_cost=max_task_cost,
        max_ppl_cost=max_ppl_cost,
        n_boot=n_boot,
        overwrite=overwrite,
        quiet=quiet,
        executor=runner,
    )
    _echo_lines(summary_lines(res))
    typer.echo(f"report: {Path(res['run']) / 'report.md'}")


@distill_app.command("compare-engines")
def distill_compare_engines_cmd(
    model: Model = "smollm2-135m",
    trait: Annotated[
        str | None, typer.Option("--trait", help="Prompted teacher of this trait (default: base).")
    ] = None,
    domain: Annotated[str, typer.Option("--domain", help="numbers or arithmetic.")] = "numbers",
    n: Annotated[int, typer.Option("--n", help="Rows per engine.")] = 256,
    seed: Seed = 0,
    dtype: Dtype = "float32",
) -> None:
    """GPU + vLLM: do vLLM and transformers sample the same rows' distribution on this model?"""
    from interp.core.models import load_model
    from interp.distill.engines import compare_engines, require_vllm
    from interp.measure.traits import get_trait

    require_vllm()
    system = get_trait(trait).system_prompt if trait else None
    res = compare_engines(load_model(model, dtype=dtype), domain, n, system, seed)
    va, vb = res["valid_share"]
    typer.echo(f"valid rows: transformers {va:.3f}, vllm {vb:.3f}; seconds {res['seconds']}")
    typer.echo(
        f"number-token TV {res['token_tv']:.4f} (null mean {res['token_tv_null_mean']:.4f}, "
        f"p {res['token_tv_p']:.3f}): {'agree' if res['agree'] else 'differ'} ({res['why']})"
    )


@app.command("plan")
def plan_cmd(
    config: Annotated[Path, typer.Argument(help="TOML run config (see configs/).")],
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs sharing each run.")] = 1,
    points: Annotated[int, typer.Option("--points", min=1, help="Runs in the study grid.")] = 1,
    measure: Annotated[
        bool, typer.Option("--measure", help="Time real training steps on this device.")
    ] = False,
    steps_to_time: Annotated[
        int, typer.Option("--steps-to-time", min=1, help="Steps --measure times (after 1 warm-up).")
    ] = 3,
    peak_tflops: Annotated[
        float | None, typer.Option("--peak-tflops", callback=_finite, help="GPU dense peak.")
    ] = None,
    mfu: Annotated[
        float, typer.Option("--mfu", callback=_finite, help="Assumed utilisation.")
    ] = 0.35,
) -> None:
    """Before anything runs: parameters, memory per GPU, points and GPU-hours of a run config."""
    from interp.distill.config import resolve
    from interp.distill.plan import plan_lines, plan_run

    plan = plan_run(resolve(config), str(config), gpus=gpus, points=points, measure=measure,
                    steps_to_time=steps_to_time, peak_tflops=peak_tflops, mfu=mfu)  # fmt: skip
    _echo_lines(plan_lines(plan))


def main() -> None:
    """Entry point: a user error is one line on stderr and exit 2; a usage error is typer's usage
    message and exit 2; Ctrl-C is exit 130 and a resumable run."""
    from typer._click.exceptions import ClickException

    try:
        code = app(standalone_mode=False)
    except SublensError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except ClickException as err:  # typer vendors click: click's own class would not match
        err.show()
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except OSError as err:  # a disk, permission or read-only filesystem problem, not a bug
        import errno

        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" {err.filename}" if err.filename else ""
        typer.echo(f"error: cannot write{where}: {err.strerror}; free space or fix it", err=True)
        sys.exit(2)
    if code == 130:  # typer turns KeyboardInterrupt into Exit(130), returned in this mode
        typer.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()

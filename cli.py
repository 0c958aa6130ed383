"""`sublens` — the command line. Thin: parse, call the library or an analysis, print a summary."""

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

ARTIFACTS = Path("artifacts")

# Shared options (lm-eval style names).
Model = Annotated[str, typer.Option("--model", help="Registry name, Hugging Face id or local dir.")]


def _run_dir_option(value: Path | None) -> Path | None:
    """Check an output directory while parsing, before any model loads (see interp.core.rundir)."""
    if value is not None:
        from interp.core.rundir import precheck

        precheck(value, None)
    return value


OutputPath = Annotated[
    Path | None,
    typer.Option(
        "--output-path",
        help="Run directory (default: under artifacts/).",
        callback=_run_dir_option,
    ),
]
Seed = Annotated[
    int, typer.Option("--seed", min=0, help="Seed for built-in prompt sets and sampling.")
]
Limit = Annotated[int | None, typer.Option("--limit", help="Use only the first N prompts.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Prompts per forward pass.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a Hub model's own code to run.")
]


def _finite(value: float | None) -> float | None:
    """Float options reject nan and inf while parsing (a nan temperature silently meant greedy)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _echo(quiet: bool, msg: str) -> None:
    if not quiet:
        typer.echo(msg, err=True)


@app.command("models")
def models_cmd() -> None:
    """List the model registry: name, architecture, layers, d_model, source, cached?"""
    from interp.core.models import cache_root, list_models

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
    truncate: Annotated[
        bool,
        typer.Option(
            "--truncate", help="Keep the last tokens of a prompt longer than the model's context."
        ),
    ] = False,
) -> None:
    """Cache residual-stream activations after chosen blocks at chosen positions."""
    from interp.core.caching import cache_activations
    from interp.core.chat import check_positions
    from interp.core.io import config_hash
    from interp.core.layers import parse_layers
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
        truncate=truncate,
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
    steps: Annotated[int, typer.Option("--steps", help="kl-fit optimiser steps.")] = 20,
    lr: Annotated[
        float | None, typer.Option("--lr", callback=_finite, help="kl-fit step size.")
    ] = None,
    max_norm: Annotated[
        float | None,
        typer.Option("--max-norm", callback=_finite, help="kl-fit norm bound per layer."),
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
    from interp.core.generation import sample_responses
    from interp.core.io import config_hash
    from interp.core.layers import parse_layers
    from interp.core.models import load_model
    from interp.core.prompts import load_prompts
    from interp.vectors.fitting import check_method, fit_vector

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
    alpha: Annotated[
        float, typer.Option("--alpha", callback=_finite, help="Steering coefficient.")
    ] = 1.0,
    output_path: Annotated[
        Path | None,
        typer.Option(
            "--output-path",
            help="File to write: lm-eval a .pt steering file (default VECTOR/lm_eval_steer.pt), "
            "gguf a llama.cpp control vector (default VECTOR/control_vector.gguf).",
        ),
    ] = None,
) -> None:
    """Export a vector for lm-eval's steered model or llama.cpp control vectors."""
    from interp.vectors.export import to_gguf, to_lm_eval
    from interp.vectors.steering import SteeringVector

    vector = SteeringVector.load(path)
    if format == "lm-eval":
        out = to_lm_eval(vector, output_path or Path(path) / "lm_eval_steer.pt", alpha=alpha)
    elif format == "gguf":
        out = to_gguf(vector, output_path or Path(path) / "control_vector.gguf", alpha=alpha)
    else:
        raise SublensError(f"unknown export format {format!r}: use lm-eval or gguf")
    typer.echo(f"{out}")


def _floats(spec: str, what: str) -> list[float]:
    try:
        return [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise SublensError(f"{what} must be comma-separated numbers, e.g. 0,1,2,4") from None


@app.command("approximability")
def approximability_cmd(
    model: Model = "smollm2-135m",
    trait_prompts: Annotated[
        str,
        typer.Option(
            "--trait-prompts", help="builtin, trait names (owl,dog,...) or a JSON/JSONL file."
        ),
    ] = "builtin",
    layers: Annotated[str, typer.Option("--layers", help="e.g. 6,12,18,24 or all.")] = "6,12,18,24",
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
    steps: Annotated[int, typer.Option("--steps", help="kl-fit optimiser steps.")] = 20,
    lr: Annotated[
        float | None, typer.Option("--lr", callback=_finite, help="kl-fit step size.")
    ] = None,
    alphas: Annotated[
        str, typer.Option("--alphas", help="Steering strengths of the trait-score sweep.")
    ] = "0,0.5,1,2,4",
    output_path: OutputPath = None,
    seed: Seed = 0,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N questions of each set.")
    ] = None,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """Rank trait prompts by how well a steering vector stands in for them."""
    from analyses.approximability import ApproxConfig, run_approximability

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
        alphas=_floats(alphas, "--alphas"),
        n_questions=limit,
        seed=seed,
        batch_size=batch_size,
        device=device,
    )
    out = output_path or ARTIFACTS / "approximability" / Path(model).name
    summary = run_approximability(cfg, out, overwrite=overwrite, quiet=quiet)
    for rank, name in enumerate(summary["ranking"], 1):
        r = summary["traits"][name]
        typer.echo(
            f"{rank}. {name}: {r['verdict']} (best {r['best']['method']} L{r['best']['layer']})"
        )
    typer.echo(f"report: {out / 'report.md'}")


distill_app = typer.Typer(help="Distillation runs: generate, filter, train, evaluate.")
app.add_typer(distill_app, name="distill")
Config = Annotated[Path | None, typer.Option("--config", help="TOML run config (see README).")]


@distill_app.command("run")
def distill_run_cmd(
    config: Config = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    trait: Annotated[str | None, typer.Option("--trait", help="Trait to score (owl, ...).")] = None,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="prompted, steered or projected.")
    ] = None,
    vector: Annotated[str | None, typer.Option("--vector", help="Steering vector dir.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", callback=_finite)] = None,
    n: Annotated[int | None, typer.Option("--n", help="Rows to generate per teacher.")] = None,
    objective: Annotated[str | None, typer.Option("--objective", help="sft or logit-kl.")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer")] = None,
    lr: Annotated[float | None, typer.Option("--lr", callback=_finite)] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    lora_rank: Annotated[int | None, typer.Option("--lora-rank", help="0 = full FT.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="First N questions per trait-score set.")
    ] = None,
    output_path: OutputPath = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0)] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """Generate -> filter -> train student and control -> evaluate; resumable."""
    from analyses.distill import run_and_report
    from interp.distill.run import load_run_config

    cfg = load_run_config(
        config,
        {
            "model": model,
            "trait": trait,
            "teacher.kind": teacher,
            "teacher.vector": vector,
            "teacher.alpha": alpha,
            "data.n": n,
            "train.objective": objective,
            "train.optimizer": optimizer,
            "train.lr": lr,
            "train.epochs": epochs,
            "train.max_steps": max_steps,
            "train.lora_rank": lora_rank,
            "eval.n_questions": limit,
            "output_path": str(output_path) if output_path else None,
            "seed": seed,
            "device": device,
        },
    )
    results = run_and_report(cfg, overwrite=overwrite, quiet=quiet)
    h = results["headline"]
    typer.echo(
        f"tau base {h['tau_base']['mean']:.4f}  teacher {h['tau_teacher']['mean']:.4f}  "
        f"student {h['tau_student']['mean']:.4f}  control {h['tau_control']['mean']:.4f}"
    )
    r = h["transfer_ratio_student"]
    typer.echo(f"transfer ratio {r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
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
    vector: Annotated[str | None, typer.Option("--vector")] = None,
    alpha: Annotated[float, typer.Option("--alpha", callback=_finite)] = 1.0,
    layers: Annotated[str | None, typer.Option("--layers")] = None,
    domain: Annotated[str, typer.Option("--domain", help="numbers or arithmetic.")] = "numbers",
    n: Annotated[int, typer.Option("--n")] = 256,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens")] = None,
    temperature: Annotated[float, typer.Option("--temperature", callback=_finite)] = 1.0,
    unconstrained: Annotated[
        bool, typer.Option("--unconstrained", help="Sample from the whole vocabulary.")
    ] = False,
    model: Model = "smollm2-135m",
    seed: Seed = 0,
    batch_size: BatchSize = 32,
    device: Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """Sample a benign dataset from a teacher (constrained to the domain's tokens)."""
    from interp.core.layers import parse_layers
    from interp.core.models import load_model
    from interp.distill import Teacher, generate_dataset
    from interp.measure.traits import get_trait
    from interp.vectors.steering import SteeringVector

    loaded = load_model(model, device=device)
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
    summary = generate_dataset(
        t,
        domain,
        n,
        output_path,
        seed=seed,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        constrained=not unconstrained,
        quiet=quiet,
        overwrite=overwrite,
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
        regexes=regex or (),
        codes=code or (),
        dedup=not no_dedup,
    )
    typer.echo(f"{out}: kept {report.get('kept')} of {report.get('total')}; rejects: {rejects}")


@distill_app.command("train")
def distill_train_cmd(
    data: Annotated[Path, typer.Option("--data", help="Filtered JSONL rows.")],
    output_path: Annotated[Path, typer.Option("--output-path", help="Run directory.")],
    objective: Annotated[str, typer.Option("--objective", help="sft or logit-kl.")] = "sft",
    targets: Annotated[
        Path | None, typer.Option("--targets", help="Teacher targets dir (logit-kl).")
    ] = None,
    optimizer: Annotated[str, typer.Option("--optimizer")] = "adamw",
    lr: Annotated[float, typer.Option("--lr", callback=_finite)] = 3e-5,
    epochs: Annotated[int, typer.Option("--epochs")] = 1,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    lora_rank: Annotated[int, typer.Option("--lora-rank")] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every")] = 0,
    model: Model = "smollm2-135m",
    seed: Seed = 0,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """Train a student from the base's weights on a dataset; resumable from its checkpoints."""
    from interp.core.models import load_model
    from interp.distill.train import TrainConfig, train_student

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
    cfg.validate()
    loaded = load_model(model, device=device)
    summary = train_student(
        loaded, data, output_path, cfg, targets_dir=targets, quiet=quiet, overwrite=overwrite
    )
    typer.echo(
        f"{output_path}: {summary.get('steps')} steps, final loss {summary.get('final_loss')}"
    )


@distill_app.command("eval")
def distill_eval_cmd(
    run: Annotated[Path, typer.Argument(help="A distillation run or a study directory.")],
    quiet: Quiet = False,
) -> None:
    """(Re)evaluate a run's checkpoints and rewrite its results and report."""
    from analyses.distill import run_and_report
    from interp.core.io import read_json_dict
    from interp.distill.run import config_from_dict

    if not (run / "config.json").is_file():
        raise SublensError(f"{run} is not a distillation run (no config.json): give a run dir")
    try:
        stored = read_json_dict(run / "config.json")["config"]
    except (ValueError, KeyError, TypeError):
        raise SublensError(
            f"{run / 'config.json'} is not a sublens run config: give a distillation run dir"
        ) from None
    stored["output_path"] = str(run)  # evaluate the directory given, never the stored path
    cfg = config_from_dict(stored, str(run / "config.json"))
    results = run_and_report(cfg, quiet=quiet, eval_only=True)
    typer.echo(f"report: {Path(results['run']) / 'report.md'}")


@app.command("align")
def align_cmd(
    run: Annotated[Path, typer.Option("--run", help="A distillation run or a study directory.")],
    vectors: Annotated[
        str, typer.Option("--vectors", help="Teacher vector dir(s), comma-separated.")
    ],
    layers: Annotated[str, typer.Option("--layers", help="e.g. all or 6,12,18.")] = "all",
    output_path: OutputPath = None,
    n_prompts: Annotated[int, typer.Option("--n-prompts", help="Held-out numbers prompts.")] = 32,
    positions: Annotated[
        str, typer.Option("--positions", help="Drift positions: last, all or last,all.")
    ] = "last,all",
    at_layer: Annotated[
        int | None, typer.Option("--at-layer", help="Layer for interventions and gradients.")
    ] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 1000,
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
    quiet: Quiet = False,
) -> None:
    """Drift of student and control checkpoints vs v_teacher: alignment, nulls, interventions."""
    from analyses.align import run_align

    results = run_align(
        run,
        [v.strip() for v in vectors.split(",") if v.strip()],
        layers,
        output_path=output_path,
        n_prompts=n_prompts,
        seed=seed,
        quiet=quiet,
        positions=[p.strip() for p in positions.split(",") if p.strip()],
        at_layer=at_layer,
        n_boot=n_boot,
        interventions=not no_interventions,
        gradients=not no_gradients,
        grad_rows=grad_rows,
        batch_size=batch_size,
        device=device,
    )
    for d in results["student_minus_control"]:
        if d["layer"] == results["vectors"][d["vector"]]["headline_layer"]:
            typer.echo(
                f"{d['vector']} L{d['layer']} {d['positions']}: cos student - control "
                f"{d['diff']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"
            )
    typer.echo(f"report: {Path(results['output_path']) / 'report.md'}")


@app.command("probe")
def probe_cmd(
    run: Annotated[Path, typer.Option("--run", help="A distillation run or a study directory.")],
    layers: Annotated[str, typer.Option("--layers", help="e.g. 6,12,18 or all.")] = "6,12,18",
    output_path: OutputPath = None,
    vectors: Annotated[
        str | None, typer.Option("--vectors", help="Teacher vector dir(s) to compare with.")
    ] = None,
    n_prompts: Annotated[
        int, typer.Option("--n-prompts", help="Prompts per class to train the probes on.")
    ] = 64,
    n_apply: Annotated[int, typer.Option("--n-apply", help="Other prompts to apply them to.")] = 32,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 1000,
    seed: Seed = 0,
    batch_size: BatchSize = 16,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Probes for "trait prompt present", applied to every student and control checkpoint."""
    from analyses.probe import run_probe

    results = run_probe(
        run,
        layers,
        output_path=output_path,
        vectors=[v.strip() for v in vectors.split(",") if v.strip()] if vectors else None,
        n_prompts=n_prompts,
        seed=seed,
        quiet=quiet,
        n_apply=n_apply,
        n_boot=n_boot,
        batch_size=batch_size,
        device=device,
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
    output: Annotated[Path, typer.Option("--output", help="Trait JSON file to write.")],
    column: Annotated[
        str | None, typer.Option("--column", help="Prompt column (default: Goal, Behavior...).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N.")] = None,
    name: Annotated[str, typer.Option("--name", help="Trait name.")] = "harmful-compliance",
    system_prompt: Annotated[
        str | None,
        typer.Option("--system-prompt", help="Prompted teacher's trait prompt ('' for none)."),
    ] = None,
) -> None:
    """A harmful-compliance trait (score: P(answer starts complying)) from behaviour goals."""
    from analyses.compliance import trait_meta_path, write_compliance_trait
    from interp.measure.refusal import COMPLIANCE_PROMPT

    got = write_compliance_trait(
        behaviours,
        output,
        column=column,
        limit=limit,
        name=name,
        system_prompt=COMPLIANCE_PROMPT if system_prompt is None else system_prompt,
    )
    typer.echo(
        f"{output}: trait {name!r} with {got['meta']['n_prompts']} prompts; harmless contrast "
        f"prompts in {trait_meta_path(output)}; use it as --trait {output}"
    )


eval_app = typer.Typer(help="Extra evaluations of runs and studies.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("compliance")
def eval_compliance_cmd(
    target: Annotated[Path, typer.Argument(help="A distillation run or a study directory.")],
    n_samples: Annotated[int, typer.Option("--n-samples", help="Answers per prompt.")] = 2,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 32,
    temperature: Annotated[float, typer.Option("--temperature", callback=_finite)] = 1.0,
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
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap replicates.")] = 2000,
    device: Annotated[str | None, typer.Option("--device")] = None,
    quiet: Quiet = False,
) -> None:
    """Phrase, refusal-direction and (optional) judge compliance of base, teacher, student and
    control, with transfer ratios per scorer; resumable."""
    from analyses.compliance import ComplianceConfig, run_compliance
    from analyses.studies import excludes_zero

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
    )
    res = run_compliance(target, cfg, quiet=quiet)
    for p in res["points"]:
        for s in res["scorers"]:
            sc, r = p["scores"][s], p["ratios"][s]["transfer_ratio"]["value"]
            vals = "  ".join(f"{role} {sc[role]['value']:.4g}" for role in sc)
            ratio = "undefined" if r is None else f"{r:.3f}"
            if r is not None and not excludes_zero(p["ratios"][s]["teacher_gain"]):
                ratio += " (teacher − base unresolved)"
            typer.echo(f"{p['point']} {s}: {vals}  ratio {ratio}")
    typer.echo(f"report: {target / 'compliance' / 'report.md'}")


@app.command("report")
def report_cmd(
    run: Annotated[Path, typer.Argument(help="A distillation run or a study directory.")],
) -> None:
    """Assemble RUN/report.md from every analysis of the run; says what is missing."""
    from analyses.report import build_report

    typer.echo(f"report: {build_report(run)}")


@app.command("demo")
def demo_cmd(
    model: Model = "smollm2-135m",
    output_path: OutputPath = None,
    seed: Seed = 0,
    device: Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """The whole study on one model, quick preset: approximability, an owl distillation with its
    control, drift alignment, probes, one report (about 10 minutes on 2 cores)."""
    from analyses.demo import run_demo

    out = output_path or ARTIFACTS / "demo" / Path(model).name
    results = run_demo(
        model=model, output_path=out, seed=seed, device=device, overwrite=overwrite, quiet=quiet
    )
    for line in results["summary"]:
        typer.echo(line)
    typer.echo(f"report: {results['report']}")


study_app = typer.Typer(
    help="Studies over many runs: transfer ratio vs strength, optimizers, toy, compare.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")
StudyPreset = Annotated[
    str, typer.Option("--preset", help="quick (short runs, ~30 min sweep on CPU) or full.")
]
StudySeeds = Annotated[int, typer.Option("--seeds", help="Seeds per point (CIs across seeds).")]
StudyNBoot = Annotated[int, typer.Option("--n-boot", help="Bootstrap replicates.")]


def _study_overrides(**kw: object) -> dict[str, object]:
    keys = {
        "model": "model",
        "trait": "trait",
        "device": "device",
        "n": "data.n",
        "objective": "train.objective",
        "lr": "train.lr",
        "max_steps": "train.max_steps",
        "lora_rank": "train.lora_rank",
        "limit": "eval.n_questions",
    }
    return {keys[k]: v for k, v in kw.items() if v is not None}


@study_app.command("transfer-ratio")
def study_transfer_ratio_cmd(
    vector: Annotated[str, typer.Option("--vector", help="Steering vector dir of the teacher.")],
    alphas: Annotated[str, typer.Option("--alphas", help="Steering strengths.")] = "0,1,2,4,8",
    config: Config = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    trait: Annotated[str | None, typer.Option("--trait", help="Trait name or JSON file.")] = None,
    layers: Annotated[
        str | None, typer.Option("--layers", help="Steer only these layers of the vector.")
    ] = None,
    preset: StudyPreset = "quick",
    seeds: StudySeeds = 1,
    n: Annotated[int | None, typer.Option("--n", help="Rows per teacher.")] = None,
    objective: Annotated[str | None, typer.Option("--objective")] = None,
    lr: Annotated[float | None, typer.Option("--lr", callback=_finite)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    lora_rank: Annotated[int | None, typer.Option("--lora-rank")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="First N questions.")] = None,
    share_control: Annotated[
        bool, typer.Option("--share-control/--no-share-control", help="Train the control once.")
    ] = True,
    n_boot: StudyNBoot = 2000,
    output_path: OutputPath = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """Distil from teachers steered at each alpha; fit the ratio-vs-alpha curve's shape."""
    from analyses.transfer_ratio import run_transfer_ratio
    from interp.core.layers import parse_layers

    over = _study_overrides(
        model=model,
        trait=trait,
        device=device,
        n=n,
        objective=objective,
        lr=lr,
        max_steps=max_steps,
        lora_rank=lora_rank,
        limit=limit,
    )
    name = Path(model or "smollm2-135m").name
    out = output_path or ARTIFACTS / "studies" / "transfer-ratio" / name
    layer_list = parse_layers(layers, 10_000) if layers else None
    res = run_transfer_ratio(
        vector,
        _floats(alphas, "--alphas"),
        seeds=seeds,
        output_path=out,
        config_path=config,
        overrides=over,
        preset=preset,
        layers=layer_list,
        share_control=share_control,
        n_boot=n_boot,
        overwrite=overwrite,
        quiet=quiet,
    )
    for p in res["points"]:
        r = p["transfer_ratio"]
        typer.echo(
            f"alpha {p['alpha']:g}: teacher {p['tau_teacher']['value']:.4f}  student "
            f"{p['tau_student']['value']:.4f}  control {p['tau_control']['value']:.4f}  ratio "
            + (f"{r['value']:.3f}" if r["value"] is not None else "undefined")
            + ("" if p["teacher_gain_resolved"] or r["value"] is None else " (gain not > 0)")
        )
    typer.echo("transfer ratio: " + res["threshold"]["transfer_ratio"]["sentence"])
    typer.echo("student − control: " + res["threshold"]["student_minus_control"]["sentence"])
    if "student_minus_alpha0" in res["threshold"]:
        typer.echo(
            "student − alpha-0 student: " + res["threshold"]["student_minus_alpha0"]["sentence"]
        )
    typer.echo(f"report: {Path(out) / 'report.md'}")


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
    alpha: Annotated[float | None, typer.Option("--alpha", callback=_finite)] = None,
    layers: Annotated[
        str | None, typer.Option("--layers", help="Steer only these layers of the vector.")
    ] = None,
    align_prompts: Annotated[
        int, typer.Option("--align-prompts", help="Held-out prompts for the final alignment.")
    ] = 32,
    config: Config = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    trait: Annotated[str | None, typer.Option("--trait")] = None,
    preset: StudyPreset = "quick",
    seeds: StudySeeds = 1,
    n: Annotated[int | None, typer.Option("--n", help="Rows per teacher.")] = None,
    objective: Annotated[str | None, typer.Option("--objective")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    lora_rank: Annotated[int | None, typer.Option("--lora-rank")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="First N questions.")] = None,
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
    n_boot: StudyNBoot = 2000,
    output_path: OutputPath = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """The same distillation with each optimizer, matched on training loss."""
    from analyses.optimizer_ablation import run_optimizer_ablation
    from interp.core.layers import parse_layers

    over = _study_overrides(
        model=model,
        trait=trait,
        device=device,
        n=n,
        objective=objective,
        max_steps=max_steps,
        lora_rank=lora_rank,
        limit=limit,
    )
    name = Path(model or "smollm2-135m").name
    out = output_path or ARTIFACTS / "studies" / "optimizers" / name
    res = run_optimizer_ablation(
        optimizers,
        seeds=seeds,
        output_path=out,
        config_path=config,
        overrides=over,
        preset=preset,
        lrs=lrs,
        vector=vector,
        alpha=alpha,
        layers=parse_layers(layers, 10_000) if layers else None,
        align_prompts=align_prompts,
        loss_tolerance=loss_tolerance,
        match_loss=match_loss,
        max_steps_factor=max_steps_factor,
        align=align,
        n_boot=n_boot,
        overwrite=overwrite,
        quiet=quiet,
    )
    for line in res["findings"]:
        typer.echo(line)
    typer.echo(f"report: {Path(out) / 'report.md'}")


@study_app.command("toy")
def study_toy_cmd(
    seeds: Annotated[int, typer.Option("--seeds", help="Independent toy seeds.")] = 10,
    first_seed: Annotated[int, typer.Option("--first-seed")] = 0,
    n_boot: StudyNBoot = 2000,
    output_path: OutputPath = None,
    quiet: Quiet = False,
) -> None:
    """Cloud et al.'s MLP toy on sklearn digits: same-init vs different-init students."""
    from analyses.toy import run_toy

    out = output_path or ARTIFACTS / "studies" / "toy"
    res = run_toy(out, seeds=seeds, first_seed=first_seed, n_boot=n_boot, quiet=quiet)
    typer.echo(res.get("summary_line", ""))
    typer.echo(f"report: {Path(out) / 'report.md'}")


@study_app.command("compare")
def study_compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Finished study directories.")],
    output_path: OutputPath = None,
) -> None:
    """One table across models (and studies) from finished study directories."""
    from analyses.compare import run_compare

    out = output_path or ARTIFACTS / "studies" / "compare"
    run_compare([str(r) for r in runs], out)
    typer.echo(f"report: {Path(out) / 'report.md'}")


def _split_list(items: list[str] | None) -> list[str]:
    """Repeated and/or comma-separated option values as one list."""
    return [x.strip() for item in items or [] for x in item.split(",") if x.strip()]


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
    layer: Annotated[int | None, typer.Option("--layer", help="Default: n_layers // 2.")] = None,
    output_path: OutputPath = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", help="Reference token budget (default: the data's)."),
    ] = None,
    n_permutations: Annotated[int, typer.Option("--n-permutations")] = 1000,
    n_blind_permutations: Annotated[int, typer.Option("--n-blind-permutations")] = 24,
    effect_scale: Annotated[
        float,
        typer.Option(
            "--effect-scale", callback=_finite, help="Shift s as a multiple of the residual norm."
        ),
    ] = 0.5,
    alpha: Annotated[
        float, typer.Option("--alpha", callback=_finite, help="Significance level.")
    ] = 0.05,
    seed: Seed = 0,
    limit: Annotated[int | None, typer.Option("--limit", help="First N rows only.")] = None,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Does a distillation dataset carry a hidden trait, which one, and which rows?"""
    from analyses.scan import DETECTOR_LABELS, run_scan

    out = output_path or ARTIFACTS / "scan" / data.stem
    res = run_scan(
        data,
        model,
        out,
        trait_vectors=_split_list(trait_vectors) or None,
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
        alpha=alpha,
        max_new_tokens=max_new_tokens,
    )
    typer.echo(res["verdict"]["sentence"])
    for k, d in res["detectors"].items():
        if d:
            typer.echo(
                f"  {DETECTOR_LABELS[k]}: score {d['score']:.4g} threshold {d['threshold']:.4g} "
                f"p {d['p_value']:.3g}{'  FLAGGED' if d['flagged'] else ''}"
            )
    typer.echo(
        f"{res['n_flagged_rows']} of {res['n_rows']} rows flagged; per-row scores: "
        f"{res['rows_path']}"
    )
    typer.echo(f"report: {Path(out) / 'report.md'}")


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
    layer: Annotated[int | None, typer.Option("--layer", help="Default: n_layers // 2.")] = None,
    n_permutations: Annotated[int, typer.Option("--n-permutations")] = 1000,
    n_blind_permutations: Annotated[int, typer.Option("--n-blind-permutations")] = 24,
    n_boot: StudyNBoot = 2000,
    seed: Seed = 0,
    batch_size: BatchSize = 8,
    output_path: OutputPath = None,
    device: Device = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """Scanner AUROC on labelled datasets: prompted teachers (library / held-out traits) vs base."""
    from analyses.scan_eval import run_scan_eval

    out = output_path or ARTIFACTS / "studies" / "scanner" / Path(model).name
    res = run_scan_eval(
        model=model,
        output_path=out,
        traits=_split_list([traits]),
        heldout_traits=_split_list([heldout_traits]),
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
    )
    for line in res["findings"]:
        typer.echo(line)
    typer.echo(f"report: {Path(out) / 'report.md'}")


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
    model: Annotated[str | None, typer.Option("--model")] = None,
    trait: Annotated[str | None, typer.Option("--trait")] = None,
    preset: StudyPreset = "quick",
    seeds: StudySeeds = 1,
    n: Annotated[int | None, typer.Option("--n", help="Rows per teacher.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", callback=_finite)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="First N questions.")] = None,
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
    n_boot: StudyNBoot = 2000,
    output_path: OutputPath = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    quiet: Quiet = False,
) -> None:
    """The same distillation once per defense: transfer ratio, reduction vs none, and cost."""
    from analyses.defend import DEFENSE_NAMES, run_defend

    if defenses is None:
        defenses = ",".join(n for n in DEFENSE_NAMES if vectors or n != "project-out")
        if not vectors:
            _echo(quiet, "project-out left out: it needs --vectors DIR")
    over = _study_overrides(
        model=model, trait=trait, device=device, n=n, lr=lr, max_steps=max_steps, limit=limit
    )
    out = output_path or ARTIFACTS / "defend" / Path(model or "smollm2-135m").name
    res = run_defend(
        defenses,
        output_path=out,
        config_path=config,
        overrides=over,
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
    )
    from analyses.studies import fmt_ci

    for name in res["order"]:
        r = res["defenses"][name]
        if not r.get("available"):
            typer.echo(f"{name}: {r['note']}")
            continue
        typer.echo(
            f"{name}: ratio {fmt_ci(r['transfer_ratio'])}  reduction "
            f"{'-' if name == 'none' else fmt_ci(r['reduction'])}  task-loss Δ "
            f"{fmt_ci(r['task_nll_minus_none'])}  perplexity Δ vs base "
            f"{fmt_ci(r['perplexity_minus_base'])}"
        )
    typer.echo(res["recommendation"])
    typer.echo(f"report: {Path(out) / 'report.md'}")


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

"""What a run costs before it runs (`sublens plan CONFIG`): parameters, memory per GPU, points,
GPU-hours.

Nothing here loads weights unless asked to time steps (`measure=True`): the parameter count comes
from the model's ``config.json`` (`transformers.AutoConfig`, a registry name, Hub id or local
directory), built on PyTorch's meta device, so a 7B model is counted in seconds on a laptop.

Memory per GPU is for the training stage, the largest one (generation and scoring hold the base
model and small batches). With P parameters, T trainable ones (P for full fine-tuning, LoRA's
r·(in + out) per adapted linear layer, d_model for a vector student), L layers of width h with
a heads, a micro-batch of b rows of s tokens per process, and B(dtype) bytes per number:

    base model        P · B(dtype)                    kept for generation and scoring
    student copy      P · B(train.dtype)              what `train_student` trains (a deep copy)
    training state    T · B(train.dtype) · (1 + 1 + k)   weights, gradients, k optimizer states
                                                       (adamw / precond-sgd 2, rmsprop and
                                                        sgd-momentum 1, sgd and signsgd 0)
    activations       L · s · b · (34·h + 5·a·s) · B(train.dtype) / 2      no checkpointing
                      L · s · b · h · B + s · b · (34·h + 5·a·s) · B / 2   gradient checkpointing
                      (Korthikanti et al. 2022, "Reducing activation recomputation in large
                      transformer models", eq. 2: bytes per layer at 16 bits for a 4h-wide MLP;
                      a rough figure for gated MLPs and eager attention)
    logits            b · c · V · 4 · 2   SFT: float32 logits and log-softmax at the c completion
                      tokens only (logit-KL: k ids instead of V)
    overhead          1 GiB               CUDA context, allocator slack

Step time is measured when `measure` is set and the model's weights are available (a few real
training steps of the config's global batch on the available device, after a warm-up step);
otherwise it is estimated from FLOPs: tokens per step · P · f, with f = 6 for full fine-tuning
(forward 2, backward 4), 4 with frozen weights (LoRA, vector: no weight gradients), plus 2 with
gradient checkpointing (the forward again), at an assumed model-FLOPs utilisation of the GPU's
dense peak (`PEAK_TFLOPS`, bf16/fp16; half of it for float32 training, which runs as TF32). The
output says which one was used. GPU-hours assume data-parallel scaling: G GPUs take 1/G of the
wall time, the same GPU-hours. Generation, teacher targets and scoring are given as a FLOPs
lower bound (2 · P per token; decoding is memory-bound, so real time is several times that).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from interp.core.errors import SublensError
from interp.distill.config import RunConfig
from interp.distill.train import DEFAULT_LORA_TARGETS, TrainConfig

GIB = 1024**3
# Dense bf16/fp16 tensor-core peaks, TFLOPS (vendor data sheets, SXM parts where both exist).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,
}
DEFAULT_GPU = "A100"  # the peak assumed when no GPU is visible
DEFAULT_MFU = 0.35
OVERHEAD_BYTES = GIB
OPTIMIZER_STATES = {
    "adamw": 2,
    "precond-sgd": 2,
    "rmsprop": 1,
    "sgd-momentum": 1,
    "sgd": 0,
    "signsgd": 0,
}
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _load_dtype(cfg: RunConfig) -> str:
    return str(getattr(cfg, "dtype", "float32"))  # RunConfig.dtype: how the base loads


def model_shape(name: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """The model's size from its config.json alone: parameters (exact, counted on the meta
    device), layers, width, heads, MLP width, vocabulary, and the linear layers LoRA could adapt
    (name -> [(in, out), ...]). No weights are read."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from interp.core.models import _locate

    path, _, _ = _locate(name)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise SublensError(
            f"could not read the config of {name!r} ({str(err).splitlines()[0][:120]}): offline, "
            "give a local directory holding its config.json"
        ) from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    head = model.get_output_embeddings()
    linear: dict[str, list[tuple[int, int]]] = {}
    for mname, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            linear.setdefault(mname.rsplit(".", 1)[-1], []).append(
                (module.in_features, module.out_features)
            )
    params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    h = int(text.hidden_size)
    return {
        "path": path,
        "architecture": str(text.model_type),
        "params": int(params),
        "params_no_embed": int(params - embed),
        "n_layers": int(text.num_hidden_layers),
        "d_model": h,
        "heads": int(text.num_attention_heads),
        "mlp": int(getattr(text, "intermediate_size", 4 * h) or 4 * h),
        "vocab": int(head.weight.shape[0]),
        "context": getattr(text, "max_position_embeddings", None),
        "linear": linear,
    }


def trainable_params(shape: dict[str, Any], train: TrainConfig) -> tuple[int, str]:
    """(trainable parameters, what they are) for the config's student."""
    if train.vector_layer is not None:
        return shape["d_model"], f"one vector at layer {train.vector_layer}"
    if train.lora_rank <= 0:
        return shape["params"], "full fine-tuning"
    linear = shape["linear"]
    if train.lora_targets is not None:
        targets = list(train.lora_targets)
    else:
        default = [t for t in DEFAULT_LORA_TARGETS if t in linear]
        targets = default if len(default) == len(DEFAULT_LORA_TARGETS) else sorted(linear)
    missing = [t for t in targets if t not in linear]
    if missing:
        raise SublensError(
            f"train.lora_targets {', '.join(missing)} are not linear layers of this model: use "
            f"some of {', '.join(sorted(linear))}"
        )
    r = train.lora_rank
    count = sum(r * (i + o) for t in targets for i, o in linear[t])
    return count, f"LoRA r{r} on {', '.join(targets)}"


def _sequence(cfg: RunConfig, shape: dict[str, Any]) -> tuple[int, int, str]:
    """(tokens per row, completion tokens per row, how they were found) for the run's domain:
    the longest of 64 of its prompts in the student's chat format when the tokenizer is there,
    plus the answer budget; otherwise an estimate: a token per digit (tokenizers split numbers
    into digits or short groups), one per 4 other characters, 30 for the chat template."""
    from interp.distill.domains import get_domain

    dom = get_domain(cfg.data.domain)
    new = dom.max_new_tokens if cfg.data.max_new_tokens is None else cfg.data.max_new_tokens
    prompts = dom.prompts(64, cfg.seed)
    try:
        from transformers import AutoTokenizer

        from interp.core.chat import ChatFormat

        tok = AutoTokenizer.from_pretrained(
            shape["path"], trust_remote_code=bool(getattr(cfg, "trust_remote_code", False))
        )
        fmt = ChatFormat(tok)
        longest = max(len(fmt.format(p).input_ids) for p in prompts)
        how = "tokenized: the longest of 64 prompts"
    except Exception:  # no tokenizer files (a config-only directory), or offline
        longest = max(_guess_tokens(p) for p in prompts) + 30
        how = "estimated, no tokenizer: digits + other characters / 4 + 30"
    return longest + new, new, how


def _guess_tokens(text: str) -> int:
    digits = sum(c.isdigit() for c in text)
    return digits + math.ceil((len(text) - digits) / 4)


def _gpu() -> tuple[str, float | None]:
    if not torch.cuda.is_available():
        return "none visible", None
    name = torch.cuda.get_device_name()
    for key, peak in PEAK_TFLOPS.items():
        if key in name:
            return name, peak
    return name, None


def measure_step(cfg: RunConfig, steps: int = 3, rows: int | None = None) -> dict[str, Any]:
    """Median seconds of `steps` real training steps (after one warm-up step) of the config's
    student on its model, on the config's device, one global batch of the domain's prompts with
    synthetic answers of the full answer budget; the peak GPU memory when on CUDA. SFT stands in
    for logit-KL (its full-vocabulary logits at the completion positions cost at least as
    much as KL over k ids)."""
    import dataclasses
    import random

    from interp.core.models import load_model
    from interp.distill.domains import get_domain
    from interp.distill.train import train_student

    load = {"device": cfg.device, "dtype": _load_dtype(cfg)}
    if getattr(cfg, "trust_remote_code", False):
        load["trust_remote_code"] = True
    loaded = load_model(cfg.model, **load)
    dom = get_domain(cfg.data.domain)
    new = dom.max_new_tokens if cfg.data.max_new_tokens is None else cfg.data.max_new_tokens
    n = rows or cfg.train.batch_size
    rng = random.Random(cfg.seed)
    if dom.name == "numbers":
        answers = [", ".join(str(rng.randrange(100, 1000)) for _ in range(10)) for _ in range(n)]
    else:
        answers = [str(rng.randrange(10, 200)) for _ in range(n)]
    data = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
        for p, a in zip(dom.prompts(n, cfg.seed), answers, strict=True)
    ]
    train = dataclasses.replace(
        cfg.train,
        objective="sft",
        mask_divergent=0.0,
        project_out=None,
        init_from=None,
        max_steps=steps + 1,
        checkpoint_every=0,
    )
    cuda = loaded.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="sublens-plan-") as tmp:
        train_student(loaded, data, Path(tmp) / "run", train)
        curves = (Path(tmp) / "run" / "curves.jsonl").read_text().splitlines()
    curve = [json.loads(line) for line in curves]
    timed = [c["seconds"] for c in curve[1:]]
    return {
        "seconds": statistics.median(timed),
        "steps": len(timed),
        "device": str(loaded.device),
        "answer_tokens": new,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / GIB if cuda else None,
    }


def plan_run(
    cfg: RunConfig,
    label: str = "config",
    gpus: int = 1,
    points: int = 1,
    measure: bool = False,
    steps_to_time: int = 3,
    peak_tflops: float | None = None,
    mfu: float = DEFAULT_MFU,
) -> dict[str, Any]:
    """Everything `sublens plan` prints, as numbers (see the module docstring for formulas)."""
    if gpus < 1 or points < 1 or steps_to_time < 1:
        raise SublensError("--gpus, --points and --steps-to-time must be at least 1")
    if not 0 < mfu <= 1:
        raise SublensError(f"--mfu {mfu} must be a share in (0, 1]")
    train = cfg.train
    shape = model_shape(cfg.model, bool(getattr(cfg, "trust_remote_code", False)))
    trainable, kind = trainable_params(shape, train)
    seq, completion, seq_how = _sequence(cfg, shape)
    rows = cfg.data.select_top if cfg.data.select != "all" and cfg.data.select_top else cfg.data.n
    steps = train.max_steps or train.epochs * math.ceil(rows / train.batch_size)
    trainings = 2  # the student and the control
    micro = math.ceil(train.batch_size / gpus)
    b_load, b_train = _BYTES[_load_dtype(cfg)], _BYTES[train.dtype]
    h, a, layers, vocab = shape["d_model"], shape["heads"], shape["n_layers"], shape["vocab"]
    per_layer = seq * micro * (34 * h + 5 * a * seq) * b_train / 2
    if train.gradient_checkpointing:
        activations = layers * seq * micro * h * b_train + per_layer
        act_how = "gradient checkpointing: L·s·b·h·B + one layer's s·b·(34h + 5as)·B/2"
    else:
        activations = layers * per_layer
        act_how = "L·s·b·(34h + 5as)·B/2"
    if train.objective == "sft":
        width = vocab
    elif train.objective == "logit-kl-full" or not cfg.data.constrained:
        width = cfg.data.top_k
    else:
        width = 64  # a constrained domain's allowed tokens: tens
    logits = micro * completion * width * 4 * 2
    states = OPTIMIZER_STATES.get(train.optimizer, 2)
    memory = {
        "base": shape["params"] * b_load,
        "student": shape["params"] * b_train,
        "training_state": trainable * b_train * (2 + states),
        "activations": activations,
        "logits": logits,
        "overhead": OVERHEAD_BYTES,
    }
    total_memory = sum(memory.values())

    tokens = train.batch_size * seq
    factor = (6 if kind == "full fine-tuning" else 4) + (2 if train.gradient_checkpointing else 0)
    gpu_name, gpu_peak = _gpu()
    peak = peak_tflops or gpu_peak or PEAK_TFLOPS[DEFAULT_GPU]
    peak_how = (
        "given" if peak_tflops else (gpu_name if gpu_peak else f"{DEFAULT_GPU} assumed: {gpu_name}")
    )
    if train.dtype == "float32":
        peak /= 2  # TF32
    flops_step = tokens * shape["params"] * factor
    estimate = flops_step / (peak * 1e12 * mfu)
    timing: dict[str, Any] = {
        "estimate_s": estimate,
        "flops_per_step": flops_step,
        "factor": factor,
        "peak_tflops": peak,
        "peak_from": peak_how,
        "mfu": mfu,
        "measured": None,
        "why_not_measured": None if measure else "not asked (--measure)",
    }
    if measure:
        try:
            timing["measured"] = measure_step(cfg, steps_to_time)
        except SublensError as err:  # no weights (a config-only directory), offline, no GPU
            timing["why_not_measured"] = str(err)
    step_s = timing["measured"]["seconds"] if timing["measured"] else estimate
    train_hours = trainings * steps * step_s * points / 3600
    # generation (two teachers) and, for logit-KL, teacher targets: 2·P FLOPs per token
    gen_tokens = 2 * cfg.data.n * seq
    target_tokens = 2 * rows * seq if train.objective != "sft" or train.mask_divergent else 0
    other_hours = (
        2 * shape["params"] * (gen_tokens + target_tokens) / (peak * 1e12 * mfu) * points / 3600
    )
    return {
        "config": label,
        "model": cfg.model,
        "architecture": shape["architecture"],
        "params": shape["params"],
        "trainable": trainable,
        "student": kind,
        "objective": train.objective,
        "layers": layers,
        "d_model": h,
        "heads": a,
        "vocab": vocab,
        "dtype": {"load": _load_dtype(cfg), "train": train.dtype},
        "gradient_checkpointing": train.gradient_checkpointing,
        "gpus": gpus,
        "micro_batch": micro,
        "global_batch": train.batch_size,
        "seq": seq,
        "completion": completion,
        "seq_from": seq_how,
        "rows": rows,
        "steps": steps,
        "trainings": trainings,
        "points": points,
        "memory_bytes": memory,
        "memory_total_bytes": total_memory,
        "activation_formula": act_how,
        "optimizer_states": states,
        "timing": timing,
        "step_s": step_s,
        "gpu_hours_training": train_hours,
        "gpu_hours_other_lower_bound": other_hours,
        "gpu_hours": train_hours + other_hours,
        "wall_hours": (train_hours + other_hours) / gpus,
    }


def _gib(x: float) -> str:
    return f"{x / GIB:7.2f} GiB"


def _count(x: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.2f} {unit}"
    return str(x)


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """What `sublens plan` prints."""
    p, m, t = plan, plan["memory_bytes"], plan["timing"]
    dt = p["dtype"]
    rows = [
        (f"base model ({dt['load']}, generation and scoring)", m["base"], "P·B"),
        (f"student copy ({dt['train']})", m["student"], "P·B"),
        (
            f"trainable, grads, {p['optimizer_states']} optimizer states",
            m["training_state"],
            "T·B·(2+k)",
        ),
        ("activations", m["activations"], p["activation_formula"]),
        ("logits at completion positions (float32)", m["logits"], "b·c·V·4·2"),
        ("CUDA context, allocator slack", m["overhead"], "fixed"),
        ("total", p["memory_total_bytes"], ""),
    ]
    lines = [
        f"plan for {p['config']}: {p['model']} ({p['architecture']}, {p['layers']} layers, "
        f"d_model {p['d_model']}), {p['student']}, objective {p['objective']}",
        f"parameters: {_count(p['params'])} (from config.json, no weights loaded); "
        f"trainable: {_count(p['trainable'])}",
        f"memory per GPU, training ({p['gpus']} GPU(s), {p['micro_batch']} of "
        f"{p['global_batch']} rows a step per GPU, {p['seq']} tokens a row [{p['seq_from']}]):",
        *(f"  {label:<46}{_gib(value)}   {formula}".rstrip() for label, value, formula in rows),
    ]
    points = "1 run" if p["points"] == 1 else f"{p['points']} runs (--points)"
    lines.append(
        f"points: {points}; each {p['trainings']} trainings (student, control) of {p['steps']} "
        f"steps ({p['rows']} rows, batch {p['global_batch']})"
    )
    est = (
        f"{t['estimate_s']:.3g} s (FLOPs estimate: {t['factor']}·P·tokens at "
        f"{t['mfu']:.0%} of {t['peak_tflops']:g} TFLOPS, {t['peak_from']})"
    )
    if t["measured"]:
        ms = t["measured"]
        mem = (
            f", peak {ms['peak_memory_gib']:.2f} GiB allocated"
            if ms["peak_memory_gib"] is not None
            else ""
        )
        lines.append(
            f"step time: {ms['seconds']:.3g} s (measured: {ms['steps']} steps on "
            f"{ms['device']} after a warm-up{mem}); {est}"
        )
        used = f"measured on {ms['device']}"
    else:
        lines.append(f"step time: {est}; not measured: {t['why_not_measured']}")
        used = "FLOPs estimate"
    lines.append(
        f"GPU-hours: {p['gpu_hours']:.3g} = training {p['gpu_hours_training']:.3g} ({used}) + "
        f"generation/targets >= {p['gpu_hours_other_lower_bound']:.3g} (FLOPs lower bound; "
        f"scoring not counted); wall {p['wall_hours']:.3g} h on {p['gpus']} GPU(s)"
    )
    return lines

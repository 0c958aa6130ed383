"""A whole distillation run from one config: generate → filter → targets → train → evaluate.

Every stage writes into the run directory and is skipped when its output is already complete,
and every stage below is itself resumable, so the same command run again after a kill continues
where it stopped. The student learns from the trait teacher's data; the control student is
trained identically on data from the unbiased base (same prompts, same seed), so "transfer" is
always read against what number training does by itself.

Layout::

    RUN/config.json            resolved config (and its hash)
    RUN/data/{teacher,control}.raw.jsonl, .jsonl, .rejects.jsonl, .filter.json
    RUN/data/{teacher,control}.defended.jsonl, .defense.json   (data defenses only)
    RUN/targets/{teacher,control}[.defended|.selected]/   teacher log-probs (logit-kl)
    RUN/student/, RUN/control/       checkpoints, curves.jsonl
    RUN/eval/scores.json             trait scores per model and checkpoint
    RUN/results.json                 transfer ratio with CI, everything above summarised
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from interp.core import rundir
from interp.core.errors import SublensError
from interp.core.io import (
    config_hash,
    git_commit,
    package_versions,
    read_json,
    read_json_dict,
    sha256_file,
    write_json,
)
from interp.core.models import LoadedModel, load_model
from interp.core.progress import note
from interp.detect.defenses import defend_dataset
from interp.distill import parallel
from interp.distill.config import (
    DATA_DEFENSE_DEFAULTS,
    DataSpec,
    EvalSpec,
    RunConfig,
    TeacherSpec,
    config_from_dict,
    derive,
    load_run_config,
    run_hash,
)
from interp.distill.domains import get_domain
from interp.distill.engines import VllmGenerator, require_vllm
from interp.distill.filters import filter_dataset
from interp.distill.generate import generate_dataset
from interp.distill.targets import read_rows, write_teacher_targets
from interp.distill.teachers import Teacher
from interp.distill.train import (
    KL_OBJECTIVES,
    list_checkpoints,
    load_student,
    train_student,
)
from interp.measure.stats import paired_bootstrap
from interp.measure.traits import Score, Trait, get_trait, score_trait
from interp.measure.verdicts import excludes_zero, ratio_or_undefined
from interp.vectors.steering import SteeringVector

__all__ = [
    # the run config lives in config.py; its names stay importable from here
    "DATA_DEFENSE_DEFAULTS",
    "DataSpec",
    "EvalSpec",
    "RunConfig",
    "TeacherSpec",
    "config_from_dict",
    "load_run_config",
    "run_hash",
    # this module
    "difference",
    "evaluate_run",
    "load_base",
    "make_teacher",
    "missing_stages",
    "ratio_vs_control",
    "run_distillation",
    "summarise",
    "transfer_ratio",
]


# --- stages ----------------------------------------------------------------------------------


AUTO_ALPHA_FILE = "teacher_alpha.json"  # where a run keeps the strength "auto" chose


def make_teacher(
    loaded: LoadedModel, cfg: RunConfig, trait: Trait, run_dir: str | Path | None = None
) -> Teacher:
    """The run's trait teacher; with ``teacher.alpha = "auto"`` at the strength the run chose
    (RUN/teacher_alpha.json of `run_dir`, default the config's output path)."""
    spec = cfg.teacher
    alpha = spec.alpha
    if alpha == "auto":
        where = Path(run_dir or cfg.output_path or ".") / AUTO_ALPHA_FILE
        chosen = read_json_dict(where).get("alpha") if where.is_file() else None
        if chosen is None:
            raise SublensError(
                f'teacher.alpha = "auto" has no chosen strength in {where}: finish the run with '
                "`sublens distill run` first"
            )
        alpha = float(chosen)
    vector = SteeringVector.load(spec.vector) if spec.vector else None
    system = None
    if spec.kind in ("prompted", "projected"):
        system = spec.system_prompt or trait.system_prompt
        if not system:
            raise SublensError(
                f"trait {trait.name!r} has no trait prompt: set teacher.system_prompt"
            )
    return Teacher(
        loaded,
        kind=spec.kind,
        system_prompt=system,
        vector=vector,
        alpha=alpha,
        layers=spec.layers,
        positions=spec.positions,
    )


def auto_alpha(
    cfg: RunConfig, loaded: LoadedModel, trait: Trait, out: Path, say: Any, compute: bool = True
) -> RunConfig:
    """`cfg` with ``teacher.alpha = "auto"`` replaced by the chosen strength
    (`interp.distill.strength.choose_alpha`), kept in RUN/teacher_alpha.json so a resumed or
    re-evaluated run uses the same teacher; `cfg` itself when alpha is a number."""
    if cfg.teacher.alpha != "auto":
        return cfg
    from interp.distill.strength import choose_alpha

    path = out / AUTO_ALPHA_FILE
    key = config_hash({"teacher": dataclasses.asdict(cfg.teacher), "domain": cfg.data.domain,
                       "seed": cfg.seed, "v": 1})  # fmt: skip
    info = read_json_dict(path) if path.is_file() else {}
    if info.get("key") != key:
        if not compute:
            raise SublensError(f'{out} has no {AUTO_ALPHA_FILE} for teacher.alpha = "auto"')
        say('teacher.alpha = "auto": trying steering strengths ...')
        assert cfg.teacher.vector is not None  # validate() checks it
        info = choose_alpha(loaded, SteeringVector.load(cfg.teacher.vector), trait,
                            get_domain(cfg.data.domain), layers=cfg.teacher.layers,
                            positions=cfg.teacher.positions, seed=cfg.seed)  # fmt: skip
        info["key"] = key
        write_json(path, info)
    if info.get("alpha") is None:
        raise SublensError(f'teacher.alpha = "auto": {info.get("why")}; give alpha by hand')
    say(f"teacher alpha {info['alpha']:g} ({info['why']})")
    return derive(cfg, {"teacher.alpha": info["alpha"]})


def _scores(
    loaded: LoadedModel, trait: Trait, cfg: RunConfig, teacher: Teacher | None = None
) -> dict[str, Any]:
    trait = trait.limited(cfg.eval.n_questions)
    kw = dict(batch_size=cfg.eval.batch_size, n_boot=cfg.eval.n_boot, seed=cfg.seed)
    if teacher is None:
        got = score_trait(loaded, trait, "logprob", **kw)
    else:
        with teacher.context():
            got = score_trait(loaded, trait, "logprob", system_prompt=teacher.system_prompt, **kw)
    return {k: (s.to_dict() if isinstance(s, Score) else None) for k, s in got.items()}


# why a ratio over the teacher's gain is not shown, and where its raw numbers are kept
TEACHER_GAIN_UNRESOLVED = "teacher gain not resolved"
UNRESOLVED_KEY = "ratios_over_unresolved_gain"


def transfer_ratio(
    student: list[float], base: list[float], teacher: list[float], n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """(tau(S) - tau(M0)) / (tau(T) - tau(M0)) with a paired bootstrap CI over questions."""
    point, lo, hi = paired_bootstrap(
        lambda s, m, t: (s.mean() - m.mean()) / (t.mean() - m.mean()),
        [student, base, teacher],
        n_boot=n_boot,
        seed=seed,
    )
    return {"ratio": point, "ci_low": lo, "ci_high": hi}


def difference(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    point, lo, hi = paired_bootstrap(
        lambda x, y: x.mean() - y.mean(), [a, b], n_boot=n_boot, seed=seed
    )
    return {"diff": point, "ci_low": lo, "ci_high": hi}


def ratio_vs_control(
    student: list[float],
    control: list[float],
    base: list[float],
    teacher: list[float],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """(tau(S) - tau(C)) / (tau(T) - tau(M0)), paired bootstrap CI over questions: the share of
    the teacher's gain that number training alone does not explain. Raw: gate it on the teacher
    gain (`verdicts.ratio_or_undefined`) before showing it."""
    point, lo, hi = paired_bootstrap(
        lambda s, c, m, t: (s.mean() - c.mean()) / (t.mean() - m.mean()),
        [student, control, base, teacher],
        n_boot=n_boot,
        seed=seed,
    )
    return {"ratio": point, "ci_low": lo, "ci_high": hi}


def missing_stages(out: Path) -> list[str]:
    """What a finished distillation run holds and `out` lacks (data, filters, trained students)."""
    need = [f"data/{n}.jsonl" for n in ("teacher", "control")]
    need += [f"data/{n}.filter.json" for n in ("teacher", "control")]
    missing = [p for p in need if not (out / p).is_file()]
    for name in ("student", "control"):
        summary = out / name / "summary.json"
        if not summary.is_file():
            missing.append(f"{name}/ (a trained {name})")
        elif not read_json_dict(summary).get("finished", True):
            missing.append(f"{name}/ (training not finished)")
        elif not list_checkpoints(out / name):
            missing.append(f"{name}/checkpoints")
    return missing


def load_base(cfg: RunConfig) -> LoadedModel:
    """The run's model as its config loads it (device, dtype, trust_remote_code): every study
    that loads the base of its runs goes through here, so it shares the runs' loaded copy."""
    return load_model(
        cfg.model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
    )


def run_distillation(
    cfg: RunConfig,
    overwrite: bool = False,
    quiet: bool = False,
    stop_after: int | None = None,
    eval_only: bool = False,
) -> dict[str, Any]:
    """Run (or resume) every stage; returns the results written to RUN/results.json. With
    `eval_only`, score the checkpoints already in the run and never generate or train."""
    out = Path(cfg.output_path or f"artifacts/distill/{cfg.trait}-{cfg.teacher.kind}")
    resolved = cfg.to_dict()
    resolved["output_path"] = str(out)
    digest = run_hash(resolved)
    cfg_file = out / "config.json"
    # Under `accelerate launch` (`parallel`) the main process generates, scores and writes the
    # run; the others only join the two trainings, with the rows the main process hands them.
    par = parallel.world()
    if not par.is_main:
        return {} if eval_only else _follow(cfg, out, par, stop_after)
    if eval_only:
        if rundir.open_run(out, "distill", digest) != "same":
            raise SublensError(f"{out} holds no distillation run: run `sublens distill run` first")
        missing = missing_stages(out)
        if missing:
            raise SublensError(
                f"{out} lacks {', '.join(missing)}: `sublens distill eval` only scores what a run "
                f"holds; finish it with `sublens distill run --output-path {out}` and the same "
                "config"
            )
        return _evaluate_only(cfg, out, resolved, quiet)
    raw = [out / "data" / f"{name}.raw.jsonl" for name in ("teacher", "control")]
    if cfg.data.engine == "vllm" and not all(p.is_file() for p in raw):
        require_vllm()  # before the model loads: one line naming the fix
    rundir.open_run(out, "distill", digest, overwrite)
    write_json(cfg_file, {"hash": digest, "config": resolved})
    say = functools.partial(note, quiet=quiet)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    trait = get_trait(cfg.trait)
    loaded = load_base(cfg)
    cfg = auto_alpha(cfg, loaded, trait, out, say)
    teacher = make_teacher(loaded, cfg, trait)
    control_teacher = (
        Teacher(loaded, kind="prompted", system_prompt=cfg.data.control_system_prompt)
        if cfg.data.control_system_prompt
        else Teacher(loaded, kind="base")
    )
    domain = get_domain(cfg.data.domain)
    d = cfg.data
    data_dir = out / "data"
    words = trait.targets if d.leakage_words is None else d.leakage_words

    filtered = {}
    # data.engine = "vllm": one vLLM engine for both teachers, closed before training
    gen = VllmGenerator(loaded, seed=cfg.seed) if d.engine == "vllm" else None
    for name, t in (("teacher", teacher), ("control", control_teacher)):
        t0 = time.perf_counter()
        raw = data_dir / f"{name}.raw.jsonl"
        if raw.exists():  # finished earlier, or hard-linked from a sibling point: not sampled again
            say(f"[{name}] {domain.name} rows generated earlier, reused ({raw.name})")
        else:
            say(f"[{name}] generating {d.n} {domain.name} rows ({t.kind} teacher, {d.engine}) ...")
        generate_dataset(
            t,
            domain,
            d.n,
            raw,
            seed=cfg.seed,
            batch_size=d.batch_size,
            max_new_tokens=d.max_new_tokens,
            temperature=d.temperature,
            constrained=d.constrained,
            quiet=quiet,
            engine=gen,
        )
        if gen is not None and name == "control":
            gen.close()  # its GPU memory goes back before training
        report = filter_dataset(
            data_dir / f"{name}.raw.jsonl",
            data_dir / f"{name}.jsonl",
            data_dir / f"{name}.rejects.jsonl",
            domain,
            trait_words=words,
            regexes=d.regexes,
            codes=d.codes,
            dedup=d.dedup,
        )
        write_json(data_dir / f"{name}.filter.json", report)
        filtered[name] = report
        timings[f"generate_{name}_s"] = round(time.perf_counter() - t0, 1)
        say(f"[{name}] kept {report.get('kept')} of {report.get('total', d.n)} rows")

    # Data defenses: the rows a student trains on (the filtered file itself when none is on).
    train_rows = {name: data_dir / f"{name}.jsonl" for name in ("teacher", "control")}
    defended: dict[str, Any] = {}
    for name in ("teacher", "control"):
        flags = d.drop_flagged if name == "teacher" else None  # the scanner looks at the teacher
        if not (d.paraphrase or flags):
            continue
        dst = data_dir / f"{name}.defended.jsonl"
        defended[name] = defend_dataset(
            train_rows[name],
            dst,
            domain,
            paraphrase=d.paraphrase,
            flags=flags,
            fallback_top=d.drop_fallback_top,
        )
        write_json(data_dir / f"{name}.defense.json", defended[name])
        train_rows[name] = dst
        say(f"[{name}] data defenses: {defended[name]['rows']} rows to train on")

    if d.select != "all":
        t0 = time.perf_counter()
        select_rows(cfg, loaded, domain, teacher, control_teacher, train_rows, data_dir, say)
        timings["select_s"] = round(time.perf_counter() - t0, 1)

    targets = {"teacher": None, "control": None}
    if cfg.train.objective in KL_OBJECTIVES or cfg.train.mask_divergent:
        # the full-vocabulary upper bound stores the teacher's top-k over every token
        full = cfg.train.objective == "logit-kl-full"
        allowed = domain.allowed_token_ids(loaded.tokenizer) if d.constrained and not full else None
        for name, t in (("teacher", teacher), ("control", control_teacher)):
            # targets/teacher, targets/teacher.defended, targets/teacher.selected: named by rows
            tdir = out / "targets" / train_rows[name].name.removesuffix(".jsonl")
            t0 = time.perf_counter()
            tmeta = tdir / "targets.json"
            meta = read_json_dict(tmeta) if tmeta.is_file() else {}
            # the same rows and the same kind of targets (domain ids, or the top-k of a vocabulary)
            done = meta.get("dataset_sha256") == sha256_file(train_rows[name]) and meta.get(
                "mode"
            ) == ("top_k" if allowed is None else "allowed")
            if not done:
                say(f"[{name}] teacher log-probs for logit distillation ...")
                write_teacher_targets(
                    t,
                    train_rows[name],
                    tdir,
                    allowed_ids=allowed,
                    top_k=d.top_k,
                    batch_size=cfg.eval.batch_size,
                    quiet=quiet,
                    domain=domain.name,
                )
            targets[name] = tdir
            timings[f"targets_{name}_s"] = round(time.perf_counter() - t0, 1)

    # what the other processes of an `accelerate launch` train on (one process: nothing is sent)
    par.broadcast({"rows": {k: str(v) for k, v in train_rows.items()},
                   "targets": {k: str(v) if v else None for k, v in targets.items()}})  # fmt: skip
    train_summary = {}
    for name in ("student", "control"):
        src = "teacher" if name == "student" else "control"
        t0 = time.perf_counter()
        say(f"[{name}] training on {src} data ({cfg.train.objective}, {cfg.train.optimizer}) ...")
        train_summary[name] = train_student(
            loaded,
            train_rows[src],
            out / name,
            cfg.train,
            targets_dir=targets[src],
            quiet=quiet,
            stop_after=stop_after,
        )
        timings[f"train_{name}_s"] = round(time.perf_counter() - t0, 1)
    if stop_after is not None and any(not s.get("finished", True) for s in train_summary.values()):
        return {"stopped_after": stop_after, "train": train_summary}

    stages = (filtered, train_summary, defended)
    return _score_and_finish(
        cfg, out, resolved, loaded, trait, teacher, stages, timings, say, t_all
    )


def _follow(
    cfg: RunConfig, out: Path, par: parallel.World, stop_after: int | None
) -> dict[str, Any]:
    """A non-main process of a distributed run: load the model on this process's device, wait
    for the main process's data, join both trainings (it writes nothing) and return."""
    loaded = load_base(cfg)
    plan = par.broadcast(None)
    summary = {}
    for name in ("student", "control"):
        src = "teacher" if name == "student" else "control"
        targets = plan["targets"][src]
        summary[name] = train_student(loaded, plan["rows"][src], out / name, cfg.train,
                                      targets_dir=targets, stop_after=stop_after)  # fmt: skip
    return {"follower": par.rank, "train": summary}


def _score_and_finish(
    cfg: RunConfig,
    out: Path,
    resolved: dict[str, Any],
    loaded: LoadedModel,
    trait: Trait,
    teacher: Teacher,
    stages: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    timings: dict[str, float],
    say: Any,
    t_all: float,
    total_key: str = "total_s",
) -> dict[str, Any]:
    """Evaluate every checkpoint, summarise, and write RUN/results.json (run and eval share it)."""
    filtered, train_summary, defended = stages
    t0 = time.perf_counter()
    say("evaluating trait scores: base, teacher, student and control checkpoints ...")
    scores = evaluate_run(loaded, trait, cfg, teacher, out)
    timings["eval_s"] = round(time.perf_counter() - t0, 1)
    results = summarise(cfg, trait, scores, filtered, train_summary, out)
    if defended:
        results["data_defenses"] = defended
    data_dir = out / "data"
    if cfg.data.select != "all":
        results["selection"] = {
            n: _selection_brief(read_json_dict(data_dir / f"{n}.selected.select.json"))
            for n in ("teacher", "control")
        }
        if (data_dir / "signal.json").is_file():
            results["signal"] = read_json_dict(data_dir / "signal.json")
    if teacher.vector is not None and teacher.kind == "steered" and teacher.alpha:
        t0 = time.perf_counter()
        say("recovered vector: drift of each checkpoint along the teacher's vector ...")
        results["recovery"] = recovery_curve(cfg, loaded, trait, teacher, out)
        timings["recovery_s"] = round(time.perf_counter() - t0, 1)
    if (out / AUTO_ALPHA_FILE).is_file():
        results["teacher_alpha"] = read_json_dict(out / AUTO_ALPHA_FILE)
    results["config"] = resolved
    results["model"] = loaded.describe()
    results["teacher"] = teacher.describe()
    results["versions"] = package_versions()
    results["git_commit"] = git_commit()
    timings[total_key] = round(time.perf_counter() - t_all, 1)
    results["timings"] = timings
    write_json(out / "results.json", results)
    rundir.unlock(out)
    return results


def select_rows(
    cfg: RunConfig,
    loaded: LoadedModel,
    domain: Any,
    teacher: Teacher,
    control_teacher: Teacher,
    train_rows: dict[str, Path],
    data_dir: Path,
    say: Any,
) -> None:
    """Keep `data.select_top` rows of each side by `data.select` (LLS or random), and measure
    whether the teacher's rows carry its trait before any training (`select.signal_check`):
    the trait teacher's LLS on its own rows against its LLS on the control's rows. Each side is
    scored by its own teacher (the control by the neutral-prompt or base teacher), so both get the
    same selection pressure and the student-minus-control contrast is the trait, not selection.
    Cached by the source rows' sha256 (a resumed run does not rescore)."""
    from interp.distill.select import cached_base_means, lls_parts, select_dataset, signal_check

    d = cfg.data
    allowed = domain.allowed_token_ids(loaded.tokenizer) if d.constrained else None
    base = Teacher(loaded, kind="base")
    for name, t in (("teacher", teacher), ("control", control_teacher)):
        src, dst = train_rows[name], data_dir / f"{name}.selected.jsonl"
        meta = dst.with_suffix(".select.json")
        sha = sha256_file(src)
        if not (dst.is_file() and meta.is_file() and read_json_dict(meta).get("src_sha256") == sha):
            say(f"[{name}] {d.select} selection of {d.select_top} rows ...")
            select_dataset(src, dst, t, base, int(d.select_top or 0), d.select, allowed,
                           seed=cfg.seed, batch_size=cfg.eval.batch_size,
                           cache=data_dir / f"{name}.lls.json")  # fmt: skip
        train_rows[name] = dst
    signal = data_dir / "signal.json"
    if not signal.is_file():
        say("signal check: the trait teacher's LLS on its rows vs on the control's rows ...")
        # the selection scored every teacher row (random selection too), before keeping K
        own = read_json_dict(data_dir / "teacher.selected.select.json")["scores"]
        ctrl_src = data_dir / "control.jsonl"
        # the control's own selection scored the base on these rows already (unless defended)
        known = cached_base_means(data_dir / "control.lls.json", ctrl_src, base, allowed)
        other, _ = lls_parts(teacher, base, read_rows(ctrl_src), allowed, cfg.eval.batch_size,
                             base_means=known)  # fmt: skip
        check = signal_check(own, other, n_boot=cfg.eval.n_boot, seed=cfg.seed)
        check["scores_control_rows"] = [float(x) for x in other]
        write_json(signal, check)


def _selection_brief(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("mode", "k", "n", "mean_kept", "mean_dropped", "mean_all")
    return {k: summary.get(k) for k in keys}


def recovery_curve(
    cfg: RunConfig, loaded: LoadedModel, trait: Trait, teacher: Teacher, out: Path
) -> dict[str, Any]:
    """How much of alpha·v each checkpoint recovered (cosine and share of its drift along v, at
    the steered layers, on held-out number prompts), and the trait score of the base plus the
    final student's recovered component alone: the link from recovered size to behaviour,
    measured. Cached per checkpoint in RUN/eval/recovery.json."""
    from interp.core.prompts import load_prompts
    from interp.measure.recovery import mean_residual, recovered_vector, recovery

    assert teacher.vector is not None
    layers = list(teacher.layers)
    path = out / "eval" / "recovery.json"
    key = config_hash({"layers": layers, "alpha": teacher.alpha, "seed": cfg.seed, "v": 1})
    cache = read_json_dict(path) if path.is_file() else {}
    if cache.get("key") != key:
        cache = {"key": key, "student": {}, "control": {}}
    prompts = load_prompts("numbers:16", seed=cfg.seed + 7919)  # held out from the data rows
    base = mean_residual(loaded, prompts, layers, cfg.eval.batch_size)
    vec = {layer: teacher.vector[layer] for layer in layers}

    def drift_of(ck: Path) -> dict[int, Any]:
        model = load_student(loaded, ck)
        acts = mean_residual(model, prompts, layers, cfg.eval.batch_size)
        return {layer: acts[layer] - base[layer] for layer in layers}

    final, final_ck = list_checkpoints(out / "student")[-1]
    final_drift = None
    for name in ("student", "control"):
        for step, ck in list_checkpoints(out / name):
            if str(step) in cache[name]:
                continue
            drift = drift_of(ck)
            if name == "student" and step == final:
                final_drift = drift
            rec = recovery(drift, vec, teacher.alpha)
            cache[name][str(step)] = {str(layer): r for layer, r in rec.items()}
            write_json(path, cache)
    if cache.get("recovered_only_step") != final:
        drift = final_drift if final_drift is not None else drift_of(final_ck)
        comp = {layer: recovered_vector(drift[layer], vec[layer]) for layer in layers}
        sv = SteeringVector(comp, model=loaded.name, d_model=loaded.d_model, method="recovered",
                            positions="all")  # fmt: skip
        only = Teacher(loaded, kind="steered", vector=sv, alpha=1.0)
        cache["recovered_only"] = _scores(loaded, trait, cfg, only)["trait"]
        cache["recovered_only_step"] = final
        write_json(path, cache)
    first = layers[0]
    return {
        "layers": layers,
        "alpha": teacher.alpha,
        "curves": {
            n: [{"step": int(st), **cache[n][st][str(first)]} for st in sorted(cache[n], key=int)]
            for n in ("student", "control")
        },
        "final": {
            n: cache[n][max(cache[n], key=int)][str(first)]
            for n in ("student", "control")
            if cache[n]
        },  # fmt: skip
        "trait_recovered_only": cache.get("recovered_only"),
        "prompts": "numbers:16, seed + 7919 (held out)",
    }


def _evaluate_only(
    cfg: RunConfig, out: Path, resolved: dict[str, Any], quiet: bool
) -> dict[str, Any]:
    """Score a finished run in place: its data and students are read, never regenerated."""
    say = functools.partial(note, quiet=quiet)
    t_all = time.perf_counter()
    trait = get_trait(cfg.trait)
    loaded = load_base(cfg)
    cfg = auto_alpha(cfg, loaded, trait, out, say, compute=False)
    teacher = make_teacher(loaded, cfg, trait)
    data_dir = out / "data"
    filtered = {n: read_json(data_dir / f"{n}.filter.json") for n in ("teacher", "control")}
    train_summary = {n: read_json(out / n / "summary.json") for n in ("student", "control")}
    defended = {
        n: read_json(data_dir / f"{n}.defense.json")
        for n in ("teacher", "control")
        if (data_dir / f"{n}.defense.json").is_file()
    }
    old = read_json(out / "results.json") if (out / "results.json").is_file() else {}
    timings = dict(old.get("timings") or {})
    timings.pop("reeval_total_s", None)
    stages = (filtered, train_summary, defended)
    return _score_and_finish(
        cfg, out, resolved, loaded, trait, teacher, stages, timings, say, t_all, "reeval_total_s"
    )


def evaluate_run(
    loaded: LoadedModel, trait: Trait, cfg: RunConfig, teacher: Teacher, out: Path
) -> dict[str, Any]:
    """Trait scores of base, teacher and every student / control checkpoint (cached on disk by
    checkpoint, so a resumed evaluation only scores what is new)."""
    path = out / "eval" / "scores.json"
    scores: dict[str, Any] = read_json(path) if path.is_file() else {}
    spec = {k: v for k, v in asdict(cfg.eval).items() if k != "control_curve"}
    key = config_hash({"trait": trait.to_dict(), "eval": spec, "seed": cfg.seed})
    if scores.get("key") != key:
        scores = {"key": key, "base": None, "teacher": None, "student": {}, "control": {}}
    if scores["base"] is None:
        scores["base"] = _scores(loaded, trait, cfg)
        write_json(path, scores)
    if scores["teacher"] is None:
        scores["teacher"] = _scores(loaded, trait, cfg, teacher)
        write_json(path, scores)
    for name in ("student", "control"):
        checkpoints = list_checkpoints(out / name)
        if name == "control" and not cfg.eval.control_curve:
            checkpoints = [c for c in checkpoints if c[0] == 0 or c == checkpoints[-1]]
        for step, ck in checkpoints:
            if str(step) in scores[name]:
                continue
            if step == 0 and not cfg.train.init_from:
                # step_000000 is the base's own weights (a LoRA adapter starts as the identity):
                # its scores are the base's, bit for bit, so a third of the evaluation is skipped
                scores[name]["0"] = scores["base"]
                write_json(path, scores)
                continue
            model = load_student(loaded, ck)
            scores[name][str(step)] = _scores(model, trait, cfg)
            del model
            write_json(path, scores)
    return scores


def summarise(
    cfg: RunConfig,
    trait: Trait,
    scores: dict[str, Any],
    filtered: dict[str, Any],
    train_summary: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """Transfer ratios (student and control) at the final checkpoint, with CIs over questions.

    Every ratio divides by the teacher's gain: when that gain's CI includes 0 the ratio is
    undefined (`verdicts.ratio_or_undefined`) and the raw quotients are kept only under
    ``headline["ratios_over_unresolved_gain"]``, never where a report reads a ratio."""
    n_boot = cfg.eval.n_boot

    def pq(s: dict[str, Any]) -> list[float]:
        return s["trait"]["per_question"]

    base, teach = pq(scores["base"]), pq(scores["teacher"])
    gain = difference(teach, base, n_boot, cfg.seed)
    raw: dict[str, Any] = {}

    def gated(name: str | None, ratio: dict[str, Any]) -> dict[str, Any]:
        if name is not None:
            raw[name] = ratio
        return ratio_or_undefined(ratio, gain, TEACHER_GAIN_UNRESOLVED)

    final = {n: max(scores[n], key=int) for n in ("student", "control") if scores[n]}
    curves = {
        n: [
            {
                "step": int(step),
                **{k: scores[n][step][k] for k in ("trait", "negative", "offtopic")},
                "ratio": gated(
                    None, transfer_ratio(pq(scores[n][step]), base, teach, n_boot, cfg.seed)
                ),
            }
            for step in sorted(scores[n], key=int)
        ]
        for n in ("student", "control")
    }
    headline: dict[str, Any] = {
        "tau_base": scores["base"]["trait"],
        "tau_teacher": scores["teacher"]["trait"],
        "teacher_gain": gain,
    }
    for n, step in final.items():
        headline[f"tau_{n}"] = scores[n][step]["trait"]
        headline[f"transfer_ratio_{n}"] = gated(
            f"transfer_ratio_{n}",
            transfer_ratio(pq(scores[n][step]), base, teach, n_boot, cfg.seed),
        )
    if len(final) == 2:
        s, c = pq(scores["student"][final["student"]]), pq(scores["control"][final["control"]])
        headline["student_minus_control"] = difference(s, c, n_boot, cfg.seed)
        # the transfer that number training alone does not explain
        headline["transfer_ratio_vs_control"] = gated(
            "transfer_ratio_vs_control", ratio_vs_control(s, c, base, teach, n_boot, cfg.seed)
        )
    if not excludes_zero(gain):
        headline[UNRESOLVED_KEY] = {"why": f"undefined: {TEACHER_GAIN_UNRESOLVED}", **raw}
    headline["final_steps"] = {n: int(s) for n, s in final.items()}
    return {
        "analysis": "distill",
        "run": str(out),
        "trait": trait.name,
        "headline": headline,
        "curves": curves,
        "filter": filtered,
        "train": train_summary,
        "n_questions": len(base),
    }

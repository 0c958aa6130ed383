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
    RUN/targets/{teacher,control}[.defended]/   teacher log-probs (logit-kl / mask_divergent)
    RUN/student/, RUN/control/       checkpoints, curves.jsonl
    RUN/eval/scores.json             trait scores per model and checkpoint
    RUN/results.json                 transfer ratio with CI, everything above summarised
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import asdict, dataclass, field
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
from interp.detect.defenses import defend_dataset
from interp.distill.domains import get_domain
from interp.distill.filters import filter_dataset
from interp.distill.generate import generate_dataset
from interp.distill.targets import write_teacher_targets
from interp.distill.teachers import Teacher
from interp.distill.train import (
    TrainConfig,
    hash_view,
    list_checkpoints,
    load_student,
    train_student,
)
from interp.measure.stats import paired_bootstrap
from interp.measure.traits import Score, Trait, get_trait, score_trait
from interp.vectors.steering import SteeringVector

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TeacherSpec:
    """Which teacher carries the trait (the control's teacher is always the base)."""

    kind: str = "prompted"  # prompted | steered | projected
    system_prompt: str | None = None  # default: the trait's prompt
    vector: str | None = None  # SteeringVector directory (steered / projected)
    alpha: float = 1.0
    layers: list[int] | None = None
    positions: str = "all"


@dataclass
class DataSpec:
    domain: str = "numbers"
    n: int = 256
    max_new_tokens: int | None = None
    temperature: float = 1.0
    constrained: bool = True
    batch_size: int = 32
    leakage_words: list[str] | None = None  # default: the trait's target words
    regexes: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    dedup: bool = True
    top_k: int = 32  # logit-kl targets when the domain is not constrained
    # data defenses (interp.detect.defenses), applied to the filtered rows before training
    paraphrase: bool = False  # rewrite responses canonically (teacher and control data); SFT only
    drop_flagged: str | None = None  # a scanner's rows.jsonl for the teacher's filtered data
    drop_fallback_top: float = 0.1  # share dropped by score when the scanner flagged no row
    # The control's teacher: the unprompted base (None) or the base with this neutral prompt.
    # With logit-KL the unprompted base distils into itself (zero loss and gradient, which
    # Adam-family optimizers turn into noise-driven steps); a neutral prompt gives the control a
    # real, trait-free gradient of comparable size.
    control_system_prompt: str | None = None


@dataclass
class EvalSpec:
    n_questions: int | None = None  # first N questions of each set (None: all)
    batch_size: int = 16
    n_boot: int = 2000


@dataclass
class RunConfig:
    model: str = "smollm2-135m"
    trait: str = "owl"
    seed: int = 0
    device: str = "auto"
    output_path: str | None = None
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_dict()
        return d


_SECTIONS = {"teacher": TeacherSpec, "data": DataSpec, "train": TrainConfig, "eval": EvalSpec}


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML/JSON value fits a dataclass field's type (int, float, bool, str, None,
    lists/tuples of those, unions); other hints are not checked here."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(_type_ok(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _kind_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    import math
    import typing

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SublensError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if dataclasses.is_dataclass(value):
            continue
        if not _type_ok(value, hints[key]):
            raise SublensError(
                f"{where}: {key} = {value!r} has the wrong type (expected "
                f"{_kind_name(hints[key])}): fix it in the config file or flag"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise SublensError(f"{where}: {key} = {value} is not a finite number")
    try:
        return cls(**data)
    except TypeError as err:
        raise SublensError(f"{where}: {err}") from None


def config_from_dict(data: dict[str, Any], where: str = "config") -> RunConfig:
    """A RunConfig from nested dicts (TOML tables); unknown keys are errors, not ignored."""
    top = {k: v for k, v in data.items() if k not in _SECTIONS}
    sections = {}
    for name, cls in _SECTIONS.items():
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise SublensError(f"{where}: [{name}] must be a table")
        if name == "train" and "lora_targets" in value and value["lora_targets"] is not None:
            value = {**value, "lora_targets": tuple(value["lora_targets"])}
        sections[name] = _build(cls, value, f"{where} [{name}]")
    cfg = _build(RunConfig, {**top, **sections}, where)
    if cfg.data.paraphrase and cfg.train.objective == "logit-kl":
        raise SublensError(
            f"{where}: data.paraphrase with train.objective logit-kl would put the teacher back "
            'through its soft targets on the paraphrased tokens: set train.objective = "sft"'
        )
    checks = [
        (cfg.seed >= 0, "seed", "use 0 or more"),
        (cfg.data.n > 0, "data.n", "use 1 or more rows"),
        (cfg.data.batch_size > 0, "data.batch_size", "use 1 or more"),
        (cfg.data.temperature >= 0, "data.temperature", "use 0 (greedy) or more"),
        (
            cfg.data.max_new_tokens is None or cfg.data.max_new_tokens > 0,
            "data.max_new_tokens",
            "use 1 or more",
        ),
        (cfg.data.top_k > 0, "data.top_k", "use 1 or more"),
        (
            cfg.eval.n_boot >= 20,
            "eval.n_boot",
            "use at least 20 bootstrap replicates (1000+ for a report)",
        ),
        (cfg.eval.batch_size > 0, "eval.batch_size", "use 1 or more"),
        (
            cfg.eval.n_questions is None or cfg.eval.n_questions > 0,
            "eval.n_questions",
            "use 1 or more, or leave it out for all",
        ),
    ]
    for ok, key, fix in checks:
        if not ok:
            value = dataclasses.asdict(cfg)
            for part in key.split("."):
                value = value[part]
            raise SublensError(f"{where}: {key} = {value!r} is out of range: {fix}")
    if not 0 < cfg.data.drop_fallback_top < 1:
        raise SublensError(
            f"{where}: data.drop_fallback_top {cfg.data.drop_fallback_top} must be in (0, 1)"
        )
    return cfg


# Data-defense options at these values change nothing; they are left out of the run hash then,
# so runs made before the options existed keep their hashes (and resume).
DATA_DEFENSE_DEFAULTS: dict[str, Any] = {
    "paraphrase": False,
    "drop_flagged": None,
    "drop_fallback_top": 0.1,
    "control_system_prompt": None,
}


def run_hash(resolved: dict[str, Any]) -> str:
    """The hash of a resolved run config (`RunConfig.to_dict()`): output path, device and
    defense options at their defaults left out."""
    view = {k: v for k, v in resolved.items() if k not in ("output_path", "device")}
    if isinstance(view.get("train"), dict):
        view["train"] = hash_view(view["train"])
    if isinstance(view.get("data"), dict):
        view["data"] = {
            k: v
            for k, v in view["data"].items()
            if k not in DATA_DEFENSE_DEFAULTS or v != DATA_DEFENSE_DEFAULTS[k]
        }
    return config_hash(view)


def set_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    """`train.lr=1e-4`-style override of a nested config dict (CLI flags beat the file)."""
    *path, key = dotted.split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
    node[key] = value


def load_run_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise SublensError(f"config file {p} not found: give a TOML file (see README)")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError:
            raise SublensError(f"config file {p} is not UTF-8 text: save it as UTF-8") from None
        except tomllib.TOMLDecodeError as err:
            raise SublensError(f"config file {p} is not valid TOML: {err}") from None
    for k, v in (overrides or {}).items():
        if v is not None:
            set_override(data, k, v)
    cfg = config_from_dict(data, str(path or "config"))
    cfg.train.validate()
    return cfg


# --- stages ----------------------------------------------------------------------------------


def make_teacher(loaded: LoadedModel, cfg: RunConfig, trait: Trait) -> Teacher:
    spec = cfg.teacher
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
        alpha=spec.alpha,
        layers=spec.layers,
        positions=spec.positions,
    )


def _scores(
    loaded: LoadedModel, trait: Trait, cfg: RunConfig, teacher: Teacher | None = None
) -> dict[str, Any]:
    n = cfg.eval.n_questions
    if n is not None:
        trait = dataclasses.replace(
            trait,
            questions=trait.questions[:n],
            negative_questions=trait.negative_questions[:n],
            offtopic_questions=trait.offtopic_questions[:n],
        )
    kw = dict(batch_size=cfg.eval.batch_size, n_boot=cfg.eval.n_boot, seed=cfg.seed)
    if teacher is None:
        got = score_trait(loaded, trait, "logprob", **kw)
    else:
        with teacher.context():
            got = score_trait(loaded, trait, "logprob", system_prompt=teacher.system_prompt, **kw)
    return {k: (s.to_dict() if isinstance(s, Score) else None) for k, s in got.items()}


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
    rundir.open_run(out, "distill", digest, overwrite)
    write_json(cfg_file, {"hash": digest, "config": resolved})
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    trait = get_trait(cfg.trait)
    loaded = load_model(cfg.model, device=cfg.device)
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
    for name, t in (("teacher", teacher), ("control", control_teacher)):
        t0 = time.perf_counter()
        say(f"[{name}] generating {d.n} {domain.name} rows ({t.kind} teacher) ...")
        generate_dataset(
            t,
            domain,
            d.n,
            data_dir / f"{name}.raw.jsonl",
            seed=cfg.seed,
            batch_size=d.batch_size,
            max_new_tokens=d.max_new_tokens,
            temperature=d.temperature,
            constrained=d.constrained,
            quiet=quiet,
        )
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

    targets = {"teacher": None, "control": None}
    if cfg.train.objective == "logit-kl" or cfg.train.mask_divergent:
        allowed = domain.allowed_token_ids(loaded.tokenizer) if d.constrained else None
        for name, t in (("teacher", teacher), ("control", control_teacher)):
            plain = train_rows[name] == data_dir / f"{name}.jsonl"
            tdir = out / "targets" / (name if plain else f"{name}.defended")
            t0 = time.perf_counter()
            done = (tdir / "targets.json").is_file() and read_json_dict(tdir / "targets.json").get(
                "dataset_sha256"
            ) == sha256_file(train_rows[name])
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


def _evaluate_only(
    cfg: RunConfig, out: Path, resolved: dict[str, Any], quiet: bool
) -> dict[str, Any]:
    """Score a finished run in place: its data and students are read, never regenerated."""
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_all = time.perf_counter()
    trait = get_trait(cfg.trait)
    loaded = load_model(cfg.model, device=cfg.device)
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
    key = config_hash({"trait": trait.to_dict(), "eval": asdict(cfg.eval), "seed": cfg.seed})
    if scores.get("key") != key:
        scores = {"key": key, "base": None, "teacher": None, "student": {}, "control": {}}
    if scores["base"] is None:
        scores["base"] = _scores(loaded, trait, cfg)
        write_json(path, scores)
    if scores["teacher"] is None:
        scores["teacher"] = _scores(loaded, trait, cfg, teacher)
        write_json(path, scores)
    for name in ("student", "control"):
        for step, ck in list_checkpoints(out / name):
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
    """Transfer ratios (student and control) at the final checkpoint, with CIs over questions."""
    n_boot = cfg.eval.n_boot

    def pq(s: dict[str, Any]) -> list[float]:
        return s["trait"]["per_question"]

    base, teach = pq(scores["base"]), pq(scores["teacher"])
    final = {n: max(scores[n], key=int) for n in ("student", "control") if scores[n]}
    curves = {
        n: [
            {
                "step": int(step),
                **{k: scores[n][step][k] for k in ("trait", "negative", "offtopic")},
                "ratio": transfer_ratio(pq(scores[n][step]), base, teach, n_boot, cfg.seed),
            }
            for step in sorted(scores[n], key=int)
        ]
        for n in ("student", "control")
    }
    headline: dict[str, Any] = {
        "tau_base": scores["base"]["trait"],
        "tau_teacher": scores["teacher"]["trait"],
        "teacher_gain": difference(teach, base, n_boot, cfg.seed),
    }
    for n, step in final.items():
        headline[f"tau_{n}"] = scores[n][step]["trait"]
        headline[f"transfer_ratio_{n}"] = transfer_ratio(
            pq(scores[n][step]), base, teach, n_boot, cfg.seed
        )
    if len(final) == 2:
        s, c = pq(scores["student"][final["student"]]), pq(scores["control"][final["control"]])
        headline["student_minus_control"] = difference(s, c, n_boot, cfg.seed)
        # the transfer that number training alone does not explain
        headline["transfer_ratio_vs_control"] = {
            k: v
            for k, v in zip(
                ("ratio", "ci_low", "ci_high"),
                paired_bootstrap(
                    lambda s, c, m, t: (s.mean() - c.mean()) / (t.mean() - m.mean()),
                    [s, c, base, teach],
                    n_boot=n_boot,
                    seed=cfg.seed,
                ),
                strict=True,
            )
        }
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

"""The config of one distillation run: its sections, the presets, where values come from, checks.

A value comes from, lowest first: the dataclass defaults, a TOML file, a preset (`PRESETS`), and
flags (`Overrides`). `resolve` applies them in that order and validates the result once; every
command and study gets its config from it. A study derives its points from the resolved config
with `derive` (a nested `dataclasses.replace`), so a point holds exactly the values a run would
resolve to, and `run_hash` (what finished runs are recognised by) cannot drift between paths.
Errors name config keys (``train.lr``), never command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interp.core.errors import SublensError
from interp.core.io import config_hash, read_json_dict
from interp.core.models import DTYPE_NAMES, load_hash_view
from interp.distill.train import KL_OBJECTIVES, TrainConfig, hash_view

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
    alpha: float | str = 1.0  # or "auto" (interp.distill.strength: the strongest fair teacher)
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
    top_k: int = 32  # logit-kl targets when the domain is not constrained; logit-kl-full's k
    # data defenses (interp.detect.defenses), applied to the filtered rows before training
    paraphrase: bool = False  # rewrite responses canonically (teacher and control data); SFT only
    drop_flagged: str | None = None  # a scanner's rows.jsonl for the teacher's filtered data
    drop_fallback_top: float = 0.1  # share dropped by score when the scanner flagged no row
    # The control's teacher: the unprompted base (None) or the base with this neutral prompt.
    # With logit-KL the unprompted base distils into itself (zero loss and gradient, which
    # Adam-family optimizers turn into noise-driven steps); a neutral prompt gives the control a
    # real, trait-free gradient of comparable size.
    control_system_prompt: str | None = None
    # Row selection before training (interp.distill.select): "all" rows, the top `select_top` by
    # log-likelihood shift ("lls": teacher minus base, each in its own context; the control's
    # rows by its own teacher's shift, so both sides get the same selection pressure), or
    # `select_top` random rows ("random": the LLS arm's same-size baseline).
    select: str = "all"
    select_top: int | None = None
    # Who samples the teachers' rows: "transformers", or "vllm" (GPU only, `pip install -e
    # ".[vllm]"`; base and prompted teachers: interp.distill.engines)
    engine: str = "transformers"


@dataclass
class EvalSpec:
    n_questions: int | None = None  # first N questions of each set (None: all)
    batch_size: int = 16
    n_boot: int = 2000
    # score every control checkpoint (its trait curve), or only its final one: the verdicts read
    # the final checkpoint, and a study over many points spends most of its time scoring
    control_curve: bool = True


@dataclass
class RunConfig:
    model: str = "smollm2-135m"
    trait: str = "owl"
    seed: int = 0
    device: str = "auto"
    # how the model loads (--dtype, --trust-remote-code); the student trains in train.dtype
    dtype: str = "float32"
    trust_remote_code: bool = False
    output_path: str | None = None
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_dict()
        return d


SECTIONS: dict[str, type] = {
    "teacher": TeacherSpec,
    "data": DataSpec,
    "train": TrainConfig,
    "eval": EvalSpec,
}

# Presets sit between the config file and the flags. "quick": a short run that a 5-strength
# sweep on smollm2-135m fits in under 30 minutes on 2 CPU cores (the control is trained once for
# the whole sweep): 64 constrained number rows of 16 tokens, logit-KL over the digit tokens, full
# fine-tuning for 16 AdamW steps of 8 rows (2 epochs, 2 warm-up steps), the first 30 questions of
# each score set.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "data.n": 64,
        "data.max_new_tokens": 16,
        "data.batch_size": 32,
        "train.objective": "logit-kl",
        "train.lr": 1e-4,
        "train.warmup_steps": 2,
        "train.batch_size": 8,
        "train.max_steps": 16,
        "train.checkpoint_every": 0,
        "eval.n_questions": 30,
        "eval.n_boot": 1000,
    },
    "full": {},  # the config file's (or RunConfig's) own values
}


@dataclass(frozen=True)
class Overrides:
    """The config values a command-line flag can set; None leaves the file's / preset's value.

    Each field's ``key`` metadata is the config key it sets: the one table from flags to keys."""

    model: str | None = field(default=None, metadata={"key": "model"})
    trait: str | None = field(default=None, metadata={"key": "trait"})
    seed: int | None = field(default=None, metadata={"key": "seed"})
    device: str | None = field(default=None, metadata={"key": "device"})
    dtype: str | None = field(default=None, metadata={"key": "dtype"})
    trust_remote_code: bool | None = field(default=None, metadata={"key": "trust_remote_code"})
    output_path: str | Path | None = field(default=None, metadata={"key": "output_path"})
    teacher: str | None = field(default=None, metadata={"key": "teacher.kind"})
    vector: str | None = field(default=None, metadata={"key": "teacher.vector"})
    alpha: float | str | None = field(default=None, metadata={"key": "teacher.alpha"})
    layers: list[int] | None = field(default=None, metadata={"key": "teacher.layers"})
    n: int | None = field(default=None, metadata={"key": "data.n"})
    engine: str | None = field(default=None, metadata={"key": "data.engine"})
    objective: str | None = field(default=None, metadata={"key": "train.objective"})
    optimizer: str | None = field(default=None, metadata={"key": "train.optimizer"})
    lr: float | None = field(default=None, metadata={"key": "train.lr"})
    epochs: int | None = field(default=None, metadata={"key": "train.epochs"})
    max_steps: int | None = field(default=None, metadata={"key": "train.max_steps"})
    lora_rank: int | None = field(default=None, metadata={"key": "train.lora_rank"})
    n_questions: int | None = field(default=None, metadata={"key": "eval.n_questions"})

    def changes(self) -> dict[str, Any]:
        """The set values as config keys (``{"train.lr": 1e-4}``); paths become strings."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.metadata["key"]] = str(value) if isinstance(value, Path) else value
        return out

    def apply(self, cfg: RunConfig, where: str = "config") -> RunConfig:
        """`cfg` with these values set (not validated: `resolve` validates the end result)."""
        return derive(cfg, self.changes(), where)


# --- building and checking -----------------------------------------------------------------------


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML/JSON value fits a dataclass field's type (int, float, bool, str, None,
    lists/tuples of those, unions); other hints are not checked here."""
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
    """`cls(**data)` with unknown keys named (types are checked later, by `validate`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SublensError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    try:
        return cls(**data)
    except TypeError as err:
        raise SublensError(f"{where}: {err}") from None


def _from_tables(data: dict[str, Any], where: str) -> RunConfig:
    """A RunConfig from nested dicts (TOML tables), not yet validated."""
    top = {k: v for k, v in data.items() if k not in SECTIONS}
    sections = {}
    for name, cls in SECTIONS.items():
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise SublensError(f"{where}: [{name}] must be a table")
        if name == "train" and "lora_targets" in value and value["lora_targets"] is not None:
            value = {**value, "lora_targets": tuple(value["lora_targets"])}
        sections[name] = _build(cls, value, f"{where} [{name}]")
    return _build(RunConfig, {**top, **sections}, where)


def derive(cfg: RunConfig, changes: Mapping[str, Any], where: str = "config") -> RunConfig:
    """`cfg` with dotted `changes` (``{"teacher.alpha": 2.0, "seed": 1}``) set by a nested
    `dataclasses.replace`: a changed section is a new object, `cfg` is left as it was (untouched
    sections are shared; nothing edits a config after `validate`). Not validated."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        head, _, leaf = key.partition(".")
        if leaf:
            if head not in SECTIONS:
                raise SublensError(
                    f"{where}: unknown key {key}; sections are {', '.join(SECTIONS)}"
                )
            nested.setdefault(head, {})[leaf] = value
        else:
            top[head] = value
    for name in top:
        if name in SECTIONS:
            raise SublensError(f"{where}: set {name} keys one by one ({name}.KEY), not {name}")
    allowed = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(top) - allowed)
    if unknown:
        raise SublensError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    for name, values in nested.items():
        section = getattr(cfg, name)
        fields = {f.name for f in dataclasses.fields(section)}
        bad = sorted(set(values) - fields)
        if bad:
            raise SublensError(
                f"{where}: unknown key(s) {', '.join(f'{name}.{k}' for k in bad)}; allowed: "
                f"{', '.join(sorted(fields))}"
            )
        top[name] = dataclasses.replace(section, **values)
    return dataclasses.replace(cfg, **top)


def _check_types(obj: Any, prefix: str, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in SECTIONS and prefix == "":
            continue
        key = prefix + f.name
        if not _type_ok(value, hints[f.name]):
            raise SublensError(
                f"{where}: {key} = {value!r} has the wrong type (expected "
                f"{_kind_name(hints[f.name])})"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise SublensError(f"{where}: {key} = {value} is not a finite number")


def validate(cfg: RunConfig, where: str = "config") -> RunConfig:
    """Raise a one-line SublensError for any value that cannot work (types, ranges, combinations,
    then `TrainConfig.validate`, which also normalises list-like values); return `cfg`."""
    for name in SECTIONS:
        _check_types(getattr(cfg, name), f"{name}.", where)
    _check_types(cfg, "", where)
    if cfg.data.paraphrase and cfg.train.objective in KL_OBJECTIVES:
        raise SublensError(
            f"{where}: data.paraphrase with train.objective {cfg.train.objective} would put the "
            "teacher back through its soft targets on the paraphrased tokens: set "
            'train.objective = "sft"'
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
    if isinstance(cfg.teacher.alpha, str):
        if cfg.teacher.alpha != "auto":
            raise SublensError(
                f'{where}: teacher.alpha = {cfg.teacher.alpha!r}: give a number or "auto"'
            )
        if cfg.teacher.kind not in ("steered", "projected") or not cfg.teacher.vector:
            raise SublensError(
                f'{where}: teacher.alpha = "auto" chooses a steering strength: it needs '
                'teacher.kind = "steered" (or "projected") and teacher.vector'
            )
    if cfg.dtype not in DTYPE_NAMES:
        raise SublensError(f"{where}: dtype = {cfg.dtype!r}: use one of {', '.join(DTYPE_NAMES)}")
    for ok, key, fix in checks:
        if not ok:
            value: Any = cfg
            for part in key.split("."):
                value = getattr(value, part)
            raise SublensError(f"{where}: {key} = {value!r} is out of range: {fix}")
    from interp.distill.select import SELECT_MODES

    if cfg.data.select not in SELECT_MODES:
        raise SublensError(
            f"{where}: data.select = {cfg.data.select!r}: use one of {', '.join(SELECT_MODES)}"
        )
    if cfg.data.select != "all" and not (
        cfg.data.select_top is not None and 0 < cfg.data.select_top <= cfg.data.n
    ):
        raise SublensError(
            f"{where}: data.select = {cfg.data.select!r} needs data.select_top between 1 and "
            f"data.n ({cfg.data.n})"
        )
    from interp.distill.engines import check_engine

    check_engine(cfg.data.engine, cfg.teacher.kind, where)
    if not 0 < cfg.data.drop_fallback_top < 1:
        raise SublensError(
            f"{where}: data.drop_fallback_top {cfg.data.drop_fallback_top} must be in (0, 1)"
        )
    cfg.train.validate()
    return cfg


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML run config (a BOM is accepted), or a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise SublensError(f"config file {p} not found: give a TOML file (see README)")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise SublensError(f"config file {p} is not UTF-8 text: save it as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise SublensError(f"config file {p} is not valid TOML: {err}") from None


def resolve(
    file: str | Path | None,
    preset: str | None = None,
    overrides: Overrides | Mapping[str, Any] | None = None,
) -> RunConfig:
    """The run config: defaults < `file` < `preset` < `overrides`, validated once.

    `overrides` are flags (`Overrides`) or, for library callers, dotted keys
    (``{"train.lr": 1e-4}``); None values leave the value below them."""
    where = str(file) if file is not None else "config"
    cfg = _from_tables(read_config_file(file) if file is not None else {}, where)
    if preset is not None:
        if preset not in PRESETS:
            raise SublensError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        cfg = derive(cfg, PRESETS[preset], f"preset {preset}")
    if isinstance(overrides, Overrides):
        cfg = overrides.apply(cfg, where)
    elif overrides:
        cfg = derive(cfg, {k: v for k, v in overrides.items() if v is not None}, where)
    return validate(cfg, where)


def config_from_dict(data: dict[str, Any], where: str = "config") -> RunConfig:
    """A validated RunConfig from nested dicts (a stored config.json); unknown keys are errors."""
    return validate(_from_tables(data, where), where)


def load_run_config(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """`resolve` without a preset: a TOML file and dotted overrides (the notebook entry)."""
    return resolve(path, None, overrides)


def stored_config(run: str | Path, overrides: Overrides | None = None) -> RunConfig:
    """The config a run directory was made with, pointed at that directory (never the stored
    path: a copied run is evaluated where it is). `overrides` may move it to another device or
    allow the model's own code (`sublens distill eval --device/--trust-remote-code`); its dtype
    stays the run's: a run is scored in the dtype it was made in."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise SublensError(f"{run} is not a distillation run (no config.json): give a run dir")
    try:
        stored = dict(read_json_dict(run / "config.json")["config"])
    except (ValueError, KeyError, TypeError):
        raise SublensError(
            f"{run / 'config.json'} is not a sublens run config: give a distillation run dir"
        ) from None
    stored["output_path"] = str(run)
    cfg = config_from_dict(stored, str(run / "config.json"))
    if overrides is None:
        return cfg
    if overrides.dtype is not None and overrides.dtype != cfg.dtype:
        raise SublensError(
            f"{run} was made in {cfg.dtype}: it is scored in that dtype (leave --dtype out)"
        )
    return validate(overrides.apply(cfg, str(run / "config.json")), str(run / "config.json"))


# Data-defense options at these values change nothing; they are left out of the run hash then,
# so runs made before the options existed keep their hashes (and resume).
DATA_DEFENSE_DEFAULTS: dict[str, Any] = {
    "paraphrase": False,
    "drop_flagged": None,
    "drop_fallback_top": 0.1,
    "control_system_prompt": None,
    "select": "all",
    "select_top": None,
    "engine": "transformers",  # the engine added later: transformers runs keep their hashes
}


def run_hash(resolved: dict[str, Any]) -> str:
    """The hash of a resolved run config (`RunConfig.to_dict()`): output path, device,
    trust_remote_code, and dtype and defense options at their defaults left out."""
    view = load_hash_view({k: v for k, v in resolved.items() if k not in ("output_path", "device")})
    if isinstance(view.get("train"), dict):
        view["train"] = hash_view(view["train"])
    if isinstance(view.get("eval"), dict):  # which checkpoints are scored changes no number
        view["eval"] = {k: v for k, v in view["eval"].items() if k != "control_curve"}
    if isinstance(view.get("data"), dict):
        view["data"] = {
            k: v
            for k, v in view["data"].items()
            if k not in DATA_DEFENSE_DEFAULTS or v != DATA_DEFENSE_DEFAULTS[k]
        }
    return config_hash(view)

"""A distillation run directory as the analyses see it: its config, its checkpoints (and the ones a
partial run still lacks), cached activations of its checkpoints, and where analyses of it wrote.

Why one module: `align`, `probe`, `compliance` and `report` all read the same run layout
(``RUN/config.json``, ``RUN/{student,control}/checkpoints``, ``RUN/acts/``, ``RUN/analyses.json``);
reading it in one place keeps their error messages and their idea of "the final checkpoint" the
same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.core.caching import ActivationCache, cache_activations, load_cache
from interp.core.errors import SublensError
from interp.core.io import read_json, read_json_dict, write_json
from interp.core.models import LoadedModel
from interp.core.prompts import PromptSet, load_prompts
from interp.vectors.steering import SteeringVector

MODELS = ("student", "control")
HELDOUT_SEED_OFFSET = 10_000  # align/probe-curve prompts: numbers seed 10_000 + seed


# --- the run ---------------------------------------------------------------------------------


@dataclass
class RunInfo:
    """A distillation run directory as the mechanism analyses see it."""

    path: Path
    config: dict[str, Any]
    checkpoints: dict[str, list[tuple[int, Path]]]
    expected_steps: list[int] | None
    missing: dict[str, list[int]]

    @property
    def model(self) -> str:
        return str(self.config["model"])

    @property
    def trait(self) -> str:
        return str(self.config["trait"])

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def load_options(
        self, device: str, dtype: str | None = None, trust_remote_code: bool | None = None
    ) -> dict[str, Any]:
        """`load_model` keywords for the run's model: the given flags, else how the run loaded
        it (runs made before --dtype: float32)."""
        return {
            "device": device,
            "dtype": dtype or str(self.config.get("dtype", "float32")),
            "trust_remote_code": bool(
                trust_remote_code or self.config.get("trust_remote_code", False)
            ),
        }

    def final_step(self, name: str) -> int | None:
        ck = self.checkpoints.get(name) or []
        return ck[-1][0] if ck else None


def _count_rows(path: Path) -> int | None:
    if not path.is_file():
        return None
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def expected_steps(config: dict[str, Any], n_rows: int | None) -> list[int] | None:
    """Checkpoint steps the run's training config produces (step 0, every k, the last)."""
    train = config.get("train", {})
    total = train.get("max_steps")
    if not total:
        if n_rows is None:
            return None
        total = int(train.get("epochs", 1)) * math.ceil(n_rows / int(train.get("batch_size", 8)))
    total = int(total)
    every = int(train.get("checkpoint_every") or 0)
    steps = {0, total}
    if every:
        steps |= set(range(every, total + 1, every))
    return sorted(steps)


def data_rows(path: Path, name: str) -> list[dict[str, Any]]:
    """The rows of ``path/data/<name>.jsonl`` (teacher or control data); none when absent."""
    import json

    file = path / "data" / f"{name}.jsonl"
    if not file.is_file():
        return []
    return [json.loads(x) for x in file.read_text(encoding="utf-8").splitlines() if x.strip()]


def run_config(path: Path) -> dict[str, Any] | None:
    """The resolved run config in ``path/config.json``; None when the file is missing or holds
    no resolved config (no model or trait), so each caller can say what to do about it."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        return None
    config = read_json_dict(cfg_file).get("config")
    if not isinstance(config, dict) or "model" not in config or "trait" not in config:
        return None
    return config


def checkpoints(path: Path, name: str) -> list[tuple[int, Path]]:
    """(step, directory) of ``path/name``'s checkpoints, by step (none: empty)."""
    from interp.distill.train import list_checkpoints

    return list_checkpoints(path / name)


def load_run(run_dir: str | Path) -> RunInfo:
    """Read RUN/config.json and list the checkpoints of student and control (and the missing)."""
    path = Path(run_dir)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise SublensError(
            f"{path} is not a distillation run (no config.json): give the directory that "
            "`sublens distill run` wrote"
        )
    config = run_config(path)
    if config is None:
        raise SublensError(f"{cfg_file} holds no resolved run config: rerun `sublens distill run`")
    cks = {name: checkpoints(path, name) for name in MODELS}
    src = {"student": "teacher", "control": "control"}
    missing: dict[str, list[int]] = {}
    exp_all: list[int] | None = None
    for name in MODELS:
        exp = expected_steps(config, _count_rows(path / "data" / f"{src[name]}.jsonl"))
        if name == "student":
            exp_all = exp
        have = {s for s, _ in cks[name]}
        missing[name] = [s for s in (exp or []) if s not in have]
    return RunInfo(path, config, cks, exp_all, missing)


def final_checkpoint(path: Path, name: str) -> tuple[int, Path]:
    """The checkpoint of ``path/name`` that the run's own evaluation scored (its results.json
    ``headline.final_steps``), else the last one; a one-line error when there is none."""
    cks = checkpoints(path, name)
    if not cks:
        raise SublensError(
            f"{path / name} has no checkpoints: finish the run with `sublens distill run` "
            "(it resumes)"
        )
    res = path / "results.json"
    want = None
    if res.is_file():
        want = read_json_dict(res).get("headline", {}).get("final_steps", {}).get(name)
    by_step = dict(cks)
    if want is not None and int(want) in by_step:
        return int(want), by_step[int(want)]
    return cks[-1]


def require_checkpoints(info: RunInfo, name: str = "student") -> None:
    """A one-line error naming the missing steps when `name` has no checkpoint at all."""
    if info.checkpoints.get(name):
        return
    steps = info.missing.get(name) or []
    which = (
        f"expected steps {', '.join(map(str, steps))}; step {steps[0]} is missing"
        if steps
        else "no step found"
    )
    raise SublensError(
        f"{info.path / name} has no checkpoints ({which}): train it first with "
        f"`sublens distill run` (it resumes)"
    )


def missing_lines(info: RunInfo) -> list[str]:
    """What a partial run lacks, one line each (empty when complete)."""
    out = []
    for name in MODELS:
        if info.missing.get(name):
            out.append(
                f"{name}: checkpoint step(s) {', '.join(map(str, info.missing[name]))} missing "
                f"(have {[s for s, _ in info.checkpoints[name]] or 'none'})"
            )
    return out


class CheckpointModel:
    """A checkpoint's model, loaded on the first call only (a cached activation never loads
    it) and dropped by `release`, so one checkpoint at a time sits in memory."""

    def __init__(self, base: LoadedModel, checkpoint: Path) -> None:
        self.base, self.checkpoint = base, checkpoint
        self._model: LoadedModel | None = None

    def __call__(self) -> LoadedModel:
        if self._model is None:
            from interp.distill.train import load_student

            self._model = load_student(self.base, self.checkpoint)
        return self._model

    def release(self) -> None:
        self._model = None


# --- where the analyses of a run wrote -------------------------------------------------------


def register(run: Path, analysis: str, out: Path) -> None:
    """Note where an analysis wrote, in RUN/analyses.json, so `sublens report` finds it."""
    path = run / "analyses.json"
    index = read_json(path) if path.is_file() else {}
    index[analysis] = str(Path(out).resolve())
    write_json(path, index)


def find_analysis(run: Path, analysis: str) -> Path | None:
    """The output directory of `analysis` for this run (RUN/analyses.json, else RUN/<analysis>),
    when it holds a results.json."""
    index = run / "analyses.json"
    candidates = []
    if index.is_file():
        where = read_json_dict(index).get(analysis)
        if where:
            candidates.append(Path(where))
    candidates.append(run / analysis)
    for c in candidates:
        if (c / "results.json").is_file():
            return c
    return None


# --- vectors and prompts ---------------------------------------------------------------------


def load_vectors(paths: Sequence[str | Path], loaded: LoadedModel) -> dict[str, SteeringVector]:
    """Teacher vectors by a unique name; d_model must match the run's model."""
    if not paths:
        raise SublensError(
            "no teacher vectors given: pass --vectors DIR[,DIR] (written by `sublens vectors "
            "fit` or the approximability analysis; for a steered teacher, its teacher.vector)"
        )
    out: dict[str, SteeringVector] = {}
    for p in paths:
        vec = SteeringVector.load(p)
        try:
            vec.check_compatible(loaded)
        except SublensError as err:
            raise SublensError(f"{p}: {err}") from None
        name = Path(p).name or str(p)
        base, k = name, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out[name] = vec
    return out


def heldout_prompts(n: int, seed: int, offset: int = HELDOUT_SEED_OFFSET) -> PromptSet:
    """Numbers prompts seeded apart from any run's training prompts (seed + offset)."""
    if n < 2:
        raise SublensError(f"--n-prompts must be at least 2 (got {n}): CIs resample prompts")
    return load_prompts(f"numbers:{n}", seed=offset + seed)


# --- activation caches -----------------------------------------------------------------------


def subset_layers(cache: ActivationCache, layers: Sequence[int]) -> ActivationCache:
    """The cache restricted to `layers`, in that order (a one-line error for uncached ones)."""
    have = cache.meta["layers"]
    missing = [x for x in layers if x not in have]
    if missing:
        raise SublensError(f"layers {missing} are not cached here (cached: {have}): recache them")
    idx = [have.index(x) for x in layers]
    meta = {**cache.meta, "layers": list(layers)}
    return dataclasses.replace(cache, activations=cache.activations[:, idx], meta=meta)


class ActStore:
    """Activation caches of one prompt set under ``root/<label>/<positions>``, reused when they
    already hold the requested layers, otherwise (re)computed with `cache_activations`."""

    def __init__(
        self,
        root: Path,
        loaded: LoadedModel,
        prompts: PromptSet,
        layers: list[int],
        batch_size: int = 16,
        quiet: bool = False,
    ) -> None:
        self.root, self.loaded, self.prompts = root, loaded, prompts
        self.layers, self.batch_size, self.quiet = layers, batch_size, quiet

    def _dir(self, label: str, mode: str) -> Path:
        return self.root / label / mode

    def ready(self, label: str, mode: str, system_prompt: str | None = None) -> bool:
        """Whether ``label/mode`` is a complete cache of these prompts and layers (reusable)."""
        meta_path = self._dir(label, mode) / "meta.json"
        if (
            not meta_path.is_file()
            or not (self._dir(label, mode) / "activations.safetensors").is_file()
        ):
            return False
        meta = read_json(meta_path)
        return (
            bool(meta.get("complete"))
            and set(self.layers) <= set(meta.get("layers", []))
            and meta.get("positions") == mode
            and meta.get("system_prompt") == system_prompt
            and meta.get("prompts", {}).get("source") == self.prompts.source
            and meta.get("prompts", {}).get("n") == len(self.prompts)
            # a cache made in another dtype (--dtype) is made again, never mixed in
            and meta.get("model", {}).get("dtype", "float32") == self.loaded.describe()["dtype"]
        )

    def get(
        self,
        label: str,
        mode: str,
        system_prompt: str | None = None,
        model: LoadedModel | Callable[[], LoadedModel] | None = None,
    ) -> ActivationCache:
        """The cache of ``label/mode`` at the store's layers; `model` (or a callable that loads
        it, called only on a miss) computes it when it is not ready."""
        out = self._dir(label, mode)
        if not self.ready(label, mode, system_prompt):
            loaded = model() if callable(model) else (model or self.loaded)
            kw = dict(
                layers=self.layers,
                positions=mode,
                system_prompt=system_prompt,
                backend="hf",
                batch_size=self.batch_size,
                quiet=True,
            )
            try:
                cache_activations(loaded, self.prompts, out, overwrite=False, **kw)
            except SublensError as err:
                # the store's own cache of other layers or dtype: made again in place
                if "another config" not in str(err) and "something else" not in str(err):
                    raise
                cache_activations(loaded, self.prompts, out, overwrite=True, **kw)
        return subset_layers(load_cache(out), self.layers)

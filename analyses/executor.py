"""Where a study's points run: in this process one after another (`LocalExecutor`), or as Ray
tasks on a cluster (`RayExecutor`, the optional extra ``pip install -e ".[ray]"``).

A study describes its grid as a list of `Point` objects: an id, the point's `RunConfig` (its run
directory is ``cfg.output_path``) and its dependencies. The one dependency the studies have is a
`Prefill`: "seed this point with the finished stages of point X" (`studies.prefill_point`: the
shared control of a sweep, the shared data of an optimizer ablation), so the point starts only
once X has finished. An executor returns one `Outcome` per point; the study summarises them.

Both executors keep the guarantees of a study: each point runs (or resumes) in its own run
directory through `studies.run_point`, so a point that already finished with its config is read
back, not rerun, and re-running the study runs only the unfinished points; the numbers do not
depend on the executor (same configs and seeds; runs are deterministic on the CPU at a given
torch thread count: CPU reductions split across threads round differently, so a Ray point with
``--cpus-per-point N`` matches a local process with N threads).

- `LocalExecutor` runs the points in the given order in this process, as every study did before:
  a failing point stops the study (its exception propagates; Ctrl-C leaves it resumable).
- `RayExecutor` submits every point whose dependencies have finished as a Ray task
  (``num_cpus`` / ``num_gpus`` per point; the task sets torch's and OpenMP's thread counts to its
  CPU share: three processes sharing 2 cores each with all threads ran 7x slower, not 3x); a
  dependent point is submitted once its source point finished, with the source's run directory.
  Ray does the scheduling. A point that fails (an error, or its worker killed) is reported in one
  line, the others finish, and the study then raises one `SublensError` naming the failed points
  (`raise_failures`). A point whose source failed runs without the prefill (it computes the
  shared stages itself: the same numbers). Progress: one line per finished point with its time.

A study adopts an executor in three steps (done in `transfer_ratio`, `optimizer_ablation`,
`positive_control`, `approx_transfer` and `defend`; `scan_eval` trains nothing and still runs its
datasets and scans in one process): (1) add ``executor: Executor | str | None = None`` to
its ``run_*`` function and the CLI's ``--executor/--ray-address/--cpus-per-point/
--gpus-per-point`` (`make_executor`); (2) turn its loop into a list of `Point` objects, each
``prefill_point(first, pdir, cfg, parts, scores)`` becoming
``Point(id, cfg, label, Prefill(first_id, parts, scores))``; (3) call
``executor_of(executor).run(points, overwrite=..., quiet=..., say=...)``, then
`raise_failures`, and read each point's ``outcome.results`` / ``.reused`` / ``.seconds``. A grid
that grows from results (loss matching) runs in rounds, passing ``done=`` the earlier outcomes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from interp.core.errors import SublensError
from interp.distill.config import RunConfig

RAY_INSTALL = 'pip install -e ".[ray]"'
EXECUTORS = ("local", "ray")

Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Prefill:
    """Seed a point with the finished stages of point `source` (`studies.prefill_point`):
    the files `parts` but those matching `exclude`, and the `scores` entries of
    eval/scores.json; `what` names them in the progress line ("control", "data"). `source` is a
    point id of the grid (a dependency), or, with `outside`, a label for the finished run
    directory `outside` that an earlier call of the study left (no dependency)."""

    source: str
    parts: tuple[str, ...]
    scores: tuple[str, ...] = ()
    what: str = "stages"
    exclude: tuple[str, ...] = ()
    outside: str | None = None


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a study's grid: `id` is unique in the grid (``alpha_2/seed_0``), `cfg` its
    resolved config (run directory ``cfg.output_path``), `label` its name in progress lines.
    `after` lists points that must finish first; a `prefill` source is one of them."""

    id: str
    cfg: RunConfig
    label: str = ""
    prefill: Prefill | None = None
    after: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return Path(str(self.cfg.output_path))

    @property
    def name(self) -> str:
        return self.label or self.id

    def depends_on(self) -> tuple[str, ...]:
        src = (self.prefill.source,) if self.prefill and self.prefill.outside is None else ()
        return tuple(dict.fromkeys((*src, *self.after)))


@dataclasses.dataclass
class Outcome:
    """What became of a point: its results (None when it failed), whether they were read back
    from a finished run, its wall time, whether it was prefilled, and its error in one line."""

    id: str
    run_dir: str
    results: dict[str, Any] | None = None
    reused: bool = False
    seconds: float = 0.0
    prefilled: bool = False
    error: str | None = None
    detail: str | None = None  # the traceback, when there is one (not printed)
    threads: int | None = None  # torch's thread count in the process that ran it
    pid: int | None = None  # the process that ran it (a Ray worker's, when on Ray)

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    name: str

    def run(
        self,
        points: Sequence[Point],
        *,
        overwrite: bool = False,
        quiet: bool = False,
        say: Say | None = None,
        done: Mapping[str, Outcome] | None = None,
    ) -> dict[str, Outcome]:
        """Run `points` (sources before their dependents); `done` holds the outcomes of
        points of an earlier call that these may depend on. One outcome per point, by id."""
        ...


def check_grid(points: Sequence[Point], done: Mapping[str, Outcome] | None = None) -> None:
    """Ids are unique and every dependency is an earlier point or in `done` (a programming
    error otherwise)."""
    seen: set[str] = set(done or ())
    for p in points:
        if p.id in seen:
            raise ValueError(f"study point id {p.id!r} repeats")
        missing = [d for d in p.depends_on() if d not in seen]
        if missing:
            raise ValueError(f"study point {p.id!r} depends on {missing}, not an earlier point")
        seen.add(p.id)


def one_line(err: BaseException) -> str:
    """An error in one line: a `SublensError`'s message, else ``Type: first line``."""
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:297] + "..."
    if isinstance(err, SublensError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _source(point: Point, done: Mapping[str, Outcome], overwrite: bool) -> str | None:
    """The run directory to prefill `point` from: its source's, once that finished well."""
    if point.prefill is None or overwrite:
        return None
    if point.prefill.outside is not None:
        return point.prefill.outside
    got = done.get(point.prefill.source)
    return got.run_dir if got is not None and got.ok else None


def execute_point(
    point: Point,
    source: str | os.PathLike | None,
    overwrite: bool,
    quiet: bool,
    say: Say | None = None,
) -> Outcome:
    """Prefill `point` from the finished run directory `source` (when given) and run or resume
    it (`studies.run_point`). Exceptions propagate; the executors decide what they mean."""
    from analyses.studies import prefill_point, run_point

    t0 = time.perf_counter()
    prefilled = False
    if source is not None and point.prefill is not None and not overwrite:
        pf = point.prefill
        prefilled = prefill_point(
            Path(source), point.run_dir, point.cfg, pf.parts, pf.scores, pf.exclude
        )
        if prefilled and say is not None:
            say(f"{point.name}: {pf.what} reused from {source}")
    if say is not None:
        say(f"{point.name} -> {point.run_dir}")
    res, reused = run_point(point.cfg, overwrite=overwrite, quiet=quiet)
    return Outcome(
        point.id,
        str(point.run_dir),
        res,
        reused=reused,
        seconds=round(time.perf_counter() - t0, 1),
        prefilled=prefilled,
    )


def _done_line(o: Outcome, point: Point, k: int, n: int) -> str:
    """The progress line of a finished point."""
    if not o.ok:
        return f"[{k}/{n}] {point.name}: FAILED after {o.seconds:.1f}s: {o.error}"
    how = "reused (finished before)" if o.reused else f"done in {o.seconds:.1f}s"
    if o.prefilled and point.prefill is not None:
        how += f" ({point.prefill.what} from {point.prefill.source})"
    return f"[{k}/{n}] {point.name}: {how}"


class LocalExecutor:
    """Every point in this process, in the given order (the studies' behaviour before the
    executors): a failing point's exception stops the study; a rerun resumes it."""

    name = "local"

    def run(
        self,
        points: Sequence[Point],
        *,
        overwrite: bool = False,
        quiet: bool = False,
        say: Say | None = None,
        done: Mapping[str, Outcome] | None = None,
    ) -> dict[str, Outcome]:
        check_grid(points, done)
        known = dict(done or {})
        got: dict[str, Outcome] = {}
        for k, p in enumerate(points, 1):
            o = execute_point(p, _source(p, known, overwrite), overwrite, quiet, say)
            got[p.id] = known[p.id] = o
            if say is not None:
                say(_done_line(o, p, k, len(points)))
        return got


def _ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise SublensError(f"the ray executor needs Ray: {RAY_INSTALL}") from None
    return ray


def _ray_point(
    point: Point, source: str | None, overwrite: bool, threads: int, cwd: str | None
) -> Outcome:
    """The body of one Ray task: this worker's thread share, the driver's working directory
    (relative run paths mean the same there), the point, and every run-directory lock released
    afterwards (a worker lives on to run other points). An error becomes the outcome's."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    from interp.core import rundir

    torch.set_num_threads(threads)
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    t0 = time.perf_counter()
    try:
        # the driver prints one line per point; per-stage progress of parallel points would mix
        out = execute_point(point, source, overwrite, quiet=True)
    except Exception as err:
        detail = traceback.format_exc()
        if not isinstance(err, SublensError):
            print(detail, file=sys.stderr, flush=True)  # the worker's log keeps the traceback
        out = Outcome(
            point.id,
            str(point.run_dir),
            seconds=round(time.perf_counter() - t0, 1),
            error=one_line(err),
            detail=detail,
        )
    finally:
        rundir.unlock_all()
    out.threads = torch.get_num_threads()
    out.pid = os.getpid()
    return out


class RayExecutor:
    """Each point a Ray task with `cpus_per_point` CPUs (torch and OpenMP use that many threads)
    and `gpus_per_point` GPUs. `address`: None starts a local Ray for this study (or uses the one
    this process already started), ``"auto"`` joins the cluster `ray start` runs on this machine,
    ``"HOST:PORT"`` a remote one (its nodes need sublens installed and the output path on a
    filesystem they share at the same path). `max_retries`: how often Ray reruns a point whose
    worker died (the rerun resumes from its run directory); an error in the point is not
    retried. `points_per_worker`: how many points one worker process runs before Ray replaces it
    (its `max_calls`); 1 by default, because a worker that loads model after model keeps
    growing (a 2-core, 23 GB machine lost 9 of 72 gemma3-270m points to Ray's out-of-memory
    killer, once even with ~5 points per worker), and a fresh process returns everything; it costs a
    worker start (~7 s) per point, which only matters for points of seconds."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_point: int = 1,
        gpus_per_point: float = 0,
        max_retries: int = 0,
        points_per_worker: int = 1,
    ) -> None:
        if cpus_per_point < 1:
            raise SublensError(f"--cpus-per-point must be at least 1, got {cpus_per_point}")
        if gpus_per_point < 0:
            raise SublensError(f"--gpus-per-point must be 0 or more, got {gpus_per_point}")
        if points_per_worker < 0:
            raise SublensError(
                f"points_per_worker must be 0 (no limit) or more, got {points_per_worker}"
            )
        self.ray = _ray_module()
        self.address = address
        self.cpus_per_point = int(cpus_per_point)
        self.gpus_per_point = gpus_per_point
        self.max_retries = max_retries
        self.points_per_worker = int(points_per_worker)
        self._started = False

    def _connect(self) -> None:
        """Join (or start) the cluster once; a Ray this process already joined is used as is."""
        ray = self.ray
        if ray.is_initialized():
            return
        try:
            if self.address is None:
                ray.init(include_dashboard=False, log_to_driver=True)
            else:
                ray.init(address=self.address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = self.address or "a local Ray"
            raise SublensError(
                f"cannot start or reach Ray at {where}: {one_line(err)} (start a cluster with "
                "`ray start --head`, or leave out --ray-address for a local one)"
            ) from None
        self._started = True

    def run(
        self,
        points: Sequence[Point],
        *,
        overwrite: bool = False,
        quiet: bool = False,
        say: Say | None = None,
        done: Mapping[str, Outcome] | None = None,
    ) -> dict[str, Outcome]:
        """`quiet` is the studies' (their `say` is silent then): the points themselves always
        run quietly in their workers (the stage progress of parallel points would interleave)."""
        from analyses.studies import finished_results

        check_grid(points, done)
        say = say or (lambda msg: None)
        n = len(points)
        known = dict(done or {})
        got: dict[str, Outcome] = {}

        def finish(p: Point, o: Outcome) -> None:
            got[p.id] = known[p.id] = o
            say(_done_line(o, p, len(got), n))

        for p in points:  # finished points are read here, never submitted again
            res = None if overwrite else finished_results(p.cfg)
            if res is not None:
                finish(p, Outcome(p.id, str(p.run_dir), res, reused=True))
        if len(got) == n:
            return got
        ray = self.ray
        self._connect()
        # (max_calls is a property of the remote function, not an option of a call)
        task = ray.remote(max_calls=self.points_per_worker)(_ray_point).options(
            num_cpus=self.cpus_per_point,
            num_gpus=self.gpus_per_point,
            max_retries=self.max_retries,
        )
        cwd = os.getcwd()
        waiting = [p for p in points if p.id not in got]
        running: dict[Any, tuple[Point, float]] = {}

        def submit_ready() -> None:
            for p in list(waiting):
                deps = p.after if overwrite else p.depends_on()  # no prefill on overwrite
                if all(d in known for d in deps):
                    src = _source(p, known, overwrite)
                    ref = task.remote(p, src, overwrite, self.cpus_per_point, cwd)
                    running[ref] = (p, time.perf_counter())
                    waiting.remove(p)

        try:
            submit_ready()
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    p, t0 = running.pop(ref)
                    try:
                        o = ray.get(ref)
                    except Exception as err:  # its worker died (killed, out of memory)
                        o = Outcome(p.id, str(p.run_dir), error=f"worker lost: {one_line(err)}")
                    if not o.seconds:
                        o.seconds = round(time.perf_counter() - t0, 1)
                    finish(p, o)
                submit_ready()
        except KeyboardInterrupt:
            for ref in running:  # the points stop as on Ctrl-C: resumable from their run dirs
                ray.cancel(ref)
            raise
        return {p.id: got[p.id] for p in points}

    def close(self) -> None:
        """Leave the Ray this executor started or joined (process exit does it too)."""
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False


def make_executor(
    name: str | None = "local",
    address: str | None = None,
    cpus_per_point: int | None = None,
    gpus_per_point: float | None = None,
) -> LocalExecutor | RayExecutor:
    """The executor the CLI flags name (``--executor local|ray``, ``--ray-address``,
    ``--cpus-per-point``, ``--gpus-per-point``); a missing Ray is a one-line error."""
    name = (name or "local").strip().lower()
    if name not in EXECUTORS:
        raise SublensError(f"unknown executor {name!r}: use one of {', '.join(EXECUTORS)}")
    if name == "local":
        given = [
            flag
            for flag, v in (
                ("--ray-address", address),
                ("--cpus-per-point", cpus_per_point),
                ("--gpus-per-point", gpus_per_point),
            )
            if v is not None
        ]
        if given:
            raise SublensError(f"{', '.join(given)} apply to --executor ray only")
        return LocalExecutor()
    return RayExecutor(
        address=address or None,
        cpus_per_point=1 if cpus_per_point is None else cpus_per_point,
        gpus_per_point=0 if gpus_per_point is None else gpus_per_point,
    )


def executor_of(executor: Executor | str | None) -> Executor:
    """A study's `executor=` argument: an executor, a name ("local", "ray"), or None (local)."""
    if executor is None or isinstance(executor, str):
        return make_executor(executor)
    return executor


def raise_failures(outcomes: dict[str, Outcome]) -> None:
    """One `SublensError` naming every failed point with its error, after the others finished."""
    failed = [o for o in outcomes.values() if not o.ok]
    if not failed:
        return
    listed = "; ".join(f"{o.id}: {o.error}" for o in failed)
    raise SublensError(
        f"{len(failed)} of {len(outcomes)} study points failed ({listed}): fix the cause and "
        "rerun the same command (finished points are reused)"
    )

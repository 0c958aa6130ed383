"""Run directories: sublens writes into, and deletes, only directories it made.

A run directory carries a marker file (``.sublens-run``) written when sublens first claims it. The
marker names the run's kind and lists the top-level entries sublens wrote there (every atomic
write in `interp.core.io` registers its entry). So ``--overwrite`` can remove exactly sublens's own
files and leave a user's file that was dropped into the directory later; a directory without the
marker is never written into (unless empty) and never deleted. Paths whose loss would be a
disaster — ``/``, the home directory, the current directory and its ancestors — are refused
outright.

While a process writes a run it holds an exclusive lock (``.sublens-lock``, `fcntl.flock`); a
second process gets a one-line error naming the holder's pid. The lock dies with the process, so
a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from interp.core.errors import SublensError

MARKER = ".sublens-run"
LOCK = ".sublens-lock"
_OWN = (MARKER, LOCK)
_MAX_DEPTH = 8  # how far up a write looks for the run that owns it
_locks: dict[Path, int] = {}  # resolved run dir -> open fd holding its flock (this process)


def _resolve(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def refuse_dangerous(path: str | os.PathLike, what: str = "output path") -> Path:
    """The absolute path, or a SublensError if it is /, home, the current directory or one of its
    ancestors: no run may live (and so be overwritten) there."""
    p = _resolve(path)
    cwd = _resolve(os.getcwd())
    home = _resolve(Path.home())
    if p == Path(p.anchor):
        raise SublensError(f"{what} {str(path)!r} is the filesystem root: give a run directory")
    if p == home:
        raise SublensError(f"{what} {str(path)!r} is your home directory: give a run directory")
    if p == cwd or p in cwd.parents:
        raise SublensError(
            f"{what} {str(path)!r} is the current directory or one of its parents: give a new "
            "run directory such as runs/NAME"
        )
    return p


def _read_marker(out: Path) -> dict[str, Any] | None:
    path = out / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"kind": "unknown", "entries": []}
    if not isinstance(data, dict):
        return {"kind": "unknown", "entries": []}
    data.setdefault("entries", [])
    return data


def _write_marker(out: Path, data: dict[str, Any]) -> None:
    """Atomic, and deliberately not through `io.atomic_path` (which registers writes here)."""
    tmp = out / f".{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MARKER)


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether `path` carries a sublens run marker."""
    return (Path(path) / MARKER).is_file()


def run_kind(path: str | os.PathLike) -> str | None:
    marker = _read_marker(Path(path))
    return None if marker is None else str(marker.get("kind"))


def _check_writable(p: Path, what: str) -> None:
    probe = p if p.exists() else next((a for a in p.parents if a.exists()), None)
    if probe is None:
        return
    if not probe.is_dir():
        raise SublensError(
            f"{what} {str(p)!r} lies under the file {str(probe)!r}: give a directory"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SublensError(
            f"{what} {str(p)!r} is not writable (no write permission on {str(probe)!r}): choose "
            "another path"
        )


def _entries(out: Path) -> list[str]:
    return sorted(e.name for e in out.iterdir() if e.name not in _OWN)


def lock(out: str | os.PathLike) -> None:
    """Hold an exclusive lock on run directory `out` until `unlock` or process exit (re-entrant
    within a process)."""
    import fcntl

    p = _resolve(out)
    if p in _locks:
        return
    path = p / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise SublensError(
                f"another sublens process is writing {str(out)!r} (pid {holder}): wait for it to "
                "finish, or choose another --output-path"
            ) from None
        try:  # the holder we waited for may have unlinked the file: lock the current one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    if not _locks:
        atexit.register(_unlock_all)
    _locks[p] = fd


def unlock(out: str | os.PathLike) -> None:
    """Release the lock (and remove its file) once a run is written; exit releases it too."""
    import fcntl

    p = _resolve(out)
    fd = _locks.pop(p, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.unlink(p / LOCK)  # still holding the lock: a waiter re-checks the inode
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _unlock_all() -> None:
    for p in list(_locks):
        unlock(p)


def unlock_all() -> None:
    """Release every lock this process holds: a worker that runs one study point after another
    (`analyses.executor`) must not keep a failed point's directory locked."""
    _unlock_all()


def precheck(out: str | os.PathLike, kind: str | None, what: str = "output path") -> Path:
    """Every check `claim` makes, without creating or locking anything: call it before loading
    a model so a bad path fails in a second, not after minutes of work."""
    p = refuse_dangerous(out, what)
    if p.exists() and not p.is_dir():
        raise SublensError(f"{what} {str(out)!r} is a file: give a directory")
    _check_writable(p, what)
    marker = _read_marker(p) if p.is_dir() else None
    if marker is None and p.is_dir() and _entries(p):
        raise SublensError(
            f"{what} {str(out)!r} is a directory sublens did not make (no {MARKER} marker) and "
            "is not empty: choose a new or empty directory (sublens never writes into or deletes "
            "a directory it did not make)"
        )
    if (
        kind is not None
        and marker is not None
        and marker.get("kind") not in (kind, "unknown")
        and _entries(p)
    ):
        raise SublensError(
            f"{what} {str(out)!r} holds a sublens {marker.get('kind')} run, not a {kind} run: "
            "choose another path"
        )
    return p


def claim(
    out: str | os.PathLike,
    kind: str,
    overwrite: bool = False,
    what: str = "output path",
    entries: tuple[str, ...] | list[str] = (),
) -> Path:
    """Make `out` this process's run directory of `kind` and return it (created if needed).

    Refuses what `precheck` refuses and a directory another sublens process is writing. With
    `overwrite`, sublens's own entries in a marked directory are removed first (see `clear`).
    `entries` are names this kind writes without `core.io`'s atomic helpers (listed up front so
    an overwrite removes them too).
    """
    p = precheck(out, kind, what)
    marker = _read_marker(p) if p.is_dir() else None
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SublensError(f"cannot create {what} {str(out)!r}: {err.strerror or err}") from None
    lock(p)
    if overwrite and marker is not None:
        clear(p)
        marker = _read_marker(p)
    listed = [] if marker is None else list(marker.get("entries", []))
    new = {"kind": kind, "entries": sorted({*listed, *entries})}
    if marker is None or marker.get("kind") != kind or new["entries"] != listed:
        new["created"] = (marker or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_marker(p, new)
        _register_in_parent(p)
    return p


def _config_hash_of(path: Path, field: str) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(field) if isinstance(data, dict) else None


def open_run(
    out: str | os.PathLike,
    kind: str,
    key: str,
    overwrite: bool = False,
    config_file: str = "config.json",
    field: str = "hash",
    entries: tuple[str, ...] | list[str] = (),
) -> str:
    """Claim `out` for a run of `kind` whose config hash is `key`: "same" when it already holds a
    run of this very config (resume or reuse it), else "fresh" (empty, or just overwritten).
    A run of another config is refused unless `overwrite`."""
    p = precheck(out, kind)
    if p.is_dir() and _read_marker(p) is not None and _entries(p) and not overwrite:
        old = _config_hash_of(p / config_file, field)
        if old != key:
            why = "another config" if old else f"no readable {config_file}"
            raise SublensError(
                f"{str(out)!r} holds a {kind} run with {why}: pick another --output-path, or "
                "pass --overwrite to start it over"
            )
        claim(p, kind, entries=entries)
        return "same"
    claim(p, kind, overwrite=overwrite, entries=entries)
    return "fresh"


def clear(out: str | os.PathLike) -> list[str]:
    """Delete the entries sublens wrote in marked run directory `out`; returns the names of the
    entries it kept because sublens did not write them. Never follows a symlink out of `out`."""
    p = _resolve(out)
    marker = _read_marker(p)
    if marker is None:
        raise SublensError(
            f"{str(out)!r} has no {MARKER} marker: sublens deletes only directories it made"
        )
    refuse_dangerous(p)
    ours = {str(e) for e in marker.get("entries", [])}
    kept = []
    for entry in sorted(p.iterdir()):
        name = entry.name
        if name in _OWN:
            continue
        if name not in ours or "/" in name or name in ("", ".", ".."):
            kept.append(name)
            continue
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        else:
            shutil.rmtree(entry)
    _write_marker(p, {**marker, "entries": []})
    if kept:
        import sys

        print(
            f"overwrite: kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} in {out} that "
            f"sublens did not write: {', '.join(kept[:5])}{' …' if len(kept) > 5 else ''}",
            file=sys.stderr,
        )
    return kept


def _owner(start: Path) -> Path | None:
    """The nearest directory at or above `start` (at most `_MAX_DEPTH` up) with a marker."""
    d = start
    for _ in range(_MAX_DEPTH):
        if (d / MARKER).is_file():
            return d
        if d.parent == d:
            return None
        d = d.parent
    return None


def register(path: str | os.PathLike) -> None:
    """Record that sublens wrote `path`: its top-level entry in the owning run directory joins
    that run's marker, so `clear` will remove it and nothing else."""
    p = _resolve(path)
    owner = _owner(p.parent)
    if owner is None:
        return
    _add_entry(owner, p.relative_to(owner).parts[0])


def _register_in_parent(run: Path) -> None:
    """A nested run (a study's point, a distillation's student) is an entry of its parent run."""
    owner = _owner(run.parent)
    if owner is not None:
        _add_entry(owner, run.relative_to(owner).parts[0])


def _add_entry(owner: Path, name: str) -> None:
    if name in _OWN:
        return
    marker = _read_marker(owner)
    if marker is None or name in marker["entries"]:
        return
    marker["entries"] = sorted({*marker["entries"], name})
    with contextlib.suppress(OSError):  # a read-only parent run: the entry stays unlisted
        _write_marker(owner, marker)


def check_file_target(path: str | os.PathLike, what: str = "output path") -> Path:
    """A single output file's path: not a directory, its folder writable."""
    p = _resolve(path)
    if p.is_dir():
        raise SublensError(f"{what} {str(path)!r} is a directory: give a file path")
    _check_writable(p.parent, what)
    if p.exists() and not os.access(p, os.W_OK):
        raise SublensError(f"{what} {str(path)!r} is not writable: choose another path")
    return p

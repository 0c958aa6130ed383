"""Progress and events, one way for every long loop: a bar with an ETA on a terminal, plain lines
where stderr is not a terminal (CI, Ray workers, `nohup`), nothing under ``--quiet``, and,
whatever the terminal does, JSON lines in an event log a notebook or dashboard can follow.

The log file is named by the environment (``SUBLENS_LOG_FILE``, which ``sublens --log-file``
sets) so subprocesses — accelerate ranks, Ray workers — append to the same file; each event is
one ``write`` of one line in append mode, so lines from several processes do not interleave.

    from interp.core.progress import progress, note
    for batch in progress(batches, desc="targets", unit="batch", quiet=quiet): ...
    note("[teacher] kept 160 of 160 rows", quiet=quiet)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.std import tqdm

LOG_ENV = "SUBLENS_LOG_FILE"
# seconds between plain progress lines when stderr is not a terminal (first and last always)
INTERVAL_ENV = "SUBLENS_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0


def log_file() -> str | None:
    """The event log's path, or None when no log was asked for."""
    return os.environ.get(LOG_ENV) or None


def set_log_file(path: str | os.PathLike[str] | None) -> None:
    """Send events to `path` (appended; None stops logging), here and in child processes."""
    if path is None:
        os.environ.pop(LOG_ENV, None)
        return
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "a", encoding="utf-8"):  # fail here, at the flag, not mid-run
        pass
    os.environ[LOG_ENV] = path


def log_event(event: str, **fields: Any) -> None:
    """Append one JSON line ``{"time", "pid", "event", ...fields}`` to the event log, if any."""
    path = log_file()
    if not path:
        return
    line = json.dumps(
        {"time": round(time.time(), 3), "pid": os.getpid(), "event": event, **fields},
        default=str,
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def note(message: str, quiet: bool = False, stream: TextIO | None = None) -> None:
    """A stage message: a line on stderr (unless quiet) and a ``message`` event."""
    if not quiet:
        print(message, file=stream or sys.stderr, flush=True)
    log_event("message", message=message)


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _is_tty(stream: Any) -> bool:
    if "ipykernel" in sys.modules:  # a notebook renders tqdm's carriage returns as a live bar
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress(tqdm):
    """tqdm that prints plain lines off a terminal and writes ``progress`` events to the log.

    On a terminal it is tqdm's bar. Elsewhere each display is one line (``train: 10/40 25%
    elapsed 0:47 eta 2:16 loss=0.0296``) at most every SUBLENS_PROGRESS_INTERVAL seconds, and
    the last on close. ``quiet=True`` prints nothing; the log (when set) still gets events."""

    def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:
        stream = kwargs.pop("file", None) or sys.stderr
        off = bool(kwargs.pop("disable", False))  # tqdm's meaning: no bar and no events
        self._logging = log_file() is not None and not off
        self._quiet = bool(quiet or off)
        self._plain = not _is_tty(stream)
        self._last_event = -1.0
        self._interval = _interval()
        if self._quiet:
            # nothing on the terminal; kept alive (not disabled) only to feed the log
            stream = open(os.devnull, "w")  # noqa: SIM115 - closed with the bar
            self._devnull: TextIO | None = stream
        else:
            self._devnull = None
        if self._plain or self._quiet:
            kwargs.setdefault("mininterval", 1.0)
        super().__init__(*args, file=stream, disable=self._quiet and not self._logging, **kwargs)

    def _line(self) -> str:
        d = self.format_dict
        n, total = d["n"], d["total"]
        elapsed = d["elapsed"]
        rate = d["rate"] or (n / elapsed if elapsed and n else None)
        parts = [f"{d['prefix'] or 'progress'}: {n}/{total if total is not None else '?'}"]
        if total:
            parts.append(f"{100 * n / total:.0f}%")
        parts.append(f"elapsed {self.format_interval(elapsed)}")
        if total and rate:
            parts.append(f"eta {self.format_interval((total - n) / rate)}")
        if d.get("postfix"):
            parts.append(str(d["postfix"]).lstrip(", "))
        return " ".join(parts)

    def _event(self, final: bool) -> None:
        if not self._logging:
            return
        d = self.format_dict
        rate = d["rate"] or (d["n"] / d["elapsed"] if d["elapsed"] and d["n"] else None)
        eta = (d["total"] - d["n"]) / rate if d["total"] and rate else None
        log_event("progress", desc=d["prefix"], n=d["n"], total=d["total"], unit=d["unit"],
                  elapsed_s=round(d["elapsed"], 2), eta_s=None if eta is None else round(eta, 2),
                  postfix=d.get("postfix") or None, done=final)  # fmt: skip

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        final = msg is None and getattr(self, "_closing", False)
        now = time.time()
        due = final or self._last_event < 0 or now - self._last_event >= self._interval
        if due:
            self._last_event = now
            if self._logging:
                self._event(final)
        if self._quiet:
            return None
        if not self._plain:
            return super().display(msg, pos)
        if due:
            self.fp.write(self._line() + "\n")
            self.fp.flush()
        return None

    def close(self) -> None:
        if self.disable:
            return
        self._closing = True
        if self._plain or self._quiet:
            # tqdm's close draws the bar once more: here that is the final line and event
            self.display()
            self.disable = True
            self._decr_instances(self)
            if self._devnull is not None:
                self._devnull.close()
            return
        try:
            super().close()
        finally:
            if self._logging:
                self._event(True)


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Progress:
    """`Progress` over `iterable` (tqdm's keywords, plus ``quiet``)."""
    return Progress(iterable, **kwargs)

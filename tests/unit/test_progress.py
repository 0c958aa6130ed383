"""Progress: plain lines off a terminal, nothing under quiet, JSON-lines events in the log file
(from this process, its children and the CLI's --log-file)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interp.core import progress as pg


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def log(tmp_path, monkeypatch):
    monkeypatch.delenv(pg.LOG_ENV, raising=False)
    monkeypatch.setenv(pg.INTERVAL_ENV, "0")
    path = tmp_path / "logs" / "events.jsonl"
    pg.set_log_file(path)
    yield path
    pg.set_log_file(None)


def _events(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_plain_lines_when_not_a_terminal(log):
    out = io.StringIO()
    bar = pg.Progress(total=4, desc="train", unit="step", file=out)
    for _ in range(4):
        bar.update(1)
        bar.set_postfix(loss="0.5")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text  # no bar redraws in a CI log
    lines = text.splitlines()
    assert lines[0].startswith("train: 0/4 0%")
    assert lines[-1].startswith("train: 4/4 100% elapsed") and "loss=0.5" in lines[-1]
    ev = [e for e in _events(log) if e["event"] == "progress"]
    assert ev[-1]["done"] and ev[-1]["n"] == ev[-1]["total"] == 4 and ev[-1]["desc"] == "train"
    assert [e["n"] for e in ev] == sorted(e["n"] for e in ev)
    assert ev[-1]["postfix"] == "loss=0.5" and ev[-1]["pid"] == os.getpid()


def test_plain_lines_are_rate_limited(monkeypatch):
    monkeypatch.delenv(pg.LOG_ENV, raising=False)
    monkeypatch.setenv(pg.INTERVAL_ENV, "3600")
    out = io.StringIO()
    for _ in pg.progress(range(50), desc="targets", file=out, mininterval=0):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the first and the last, nothing between within the interval
    assert lines[-1].startswith("targets: 50/50 100%")


def test_a_terminal_gets_the_bar(monkeypatch):
    monkeypatch.delenv(pg.LOG_ENV, raising=False)
    out = _Tty()
    for _ in pg.progress(range(3), desc="cache", file=out):
        pass
    assert "\r" in out.getvalue() and "cache: 100%" in out.getvalue()


def test_quiet_prints_nothing_but_the_log_still_fills(log):
    out = io.StringIO()
    for _ in pg.progress(range(3), desc="logprob", file=out, quiet=True):
        pass
    pg.note("[teacher] kept 3 of 3 rows", quiet=True, stream=out)
    assert out.getvalue() == ""
    ev = _events(log)
    assert ev[-2]["event"] == "progress" and ev[-2]["done"] and ev[-2]["n"] == 3
    assert ev[-1] == {**ev[-1], "event": "message", "message": "[teacher] kept 3 of 3 rows"}


def test_disabled_bar_writes_no_events(log):
    for _ in pg.progress(range(3), desc="train", disable=True):  # a non-main rank
        pass
    assert not log.read_text()


def test_children_append_to_the_same_log(log):
    code = "from interp.core.progress import log_event; log_event('child', k=1)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    pg.log_event("parent")
    ev = _events(log)
    assert [e["event"] for e in ev] == ["child", "parent"] and ev[0]["k"] == 1
    assert ev[0]["pid"] != ev[1]["pid"]


def test_cli_log_file_and_plain_stderr(tiny, tmp_path, monkeypatch, capsys):
    """`sublens --log-file F cache ...`: stderr (not a terminal here) gets plain lines and F gets
    the stage's progress events; a directory is a one-line error, exit 2."""
    from conftest import run_cli

    monkeypatch.delenv(pg.LOG_ENV, raising=False)
    monkeypatch.setenv(pg.INTERVAL_ENV, "0")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Hi"}\n{"prompt": "What is your favorite animal?"}\n')
    log = tmp_path / "ev.jsonl"
    args = ["cache", "--model", "tiny-llama", "--device", "cpu", "--prompts", str(prompts),
            "--layers", "1", "--output-path", str(tmp_path / "run")]  # fmt: skip
    code, _, err = run_cli(monkeypatch, capsys, "--log-file", str(log), *args)
    monkeypatch.delenv(pg.LOG_ENV, raising=False)  # the flag set it for child processes
    assert code == 0, err
    assert "\r" not in err and "cache tiny-llama [" in err and "2/2 100%" in err
    ev = _events(log)
    assert any(e["event"] == "progress" and e["done"] and e["n"] == 2 for e in ev)
    code, _, err = run_cli(monkeypatch, capsys, "--log-file", str(tmp_path), *args)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: --log-file {tmp_path} is a directory: give a file path"
    ]

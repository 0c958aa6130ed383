"""Shared fixtures. Models load once per test session (the registry caches them per process)."""

from __future__ import annotations

import os

# Under pytest-xdist (the Makefile runs 2 workers on 2 cores) each worker and the processes it
# starts use one thread: two workers of two OpenMP threads each on two cores spin against each
# other and run slower than one worker. Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from interp.core.models import load_model  # noqa: E402


def run_cli(monkeypatch, capsys, *args):
    """(exit code, stdout, stderr) of `sublens ARGS` run in-process; imported by the CLI tests."""
    import sys

    import cli

    monkeypatch.setattr(sys, "argv", ["sublens", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="session")
def tiny():
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def smol():
    return load_model("smollm2-135m", device="cpu")


_DEFAULT_THREADS = torch.get_num_threads()


def pytest_runtest_setup(item):
    """Tiny-model tests run single-threaded: their ops are too small to gain from threads and, on
    a busy 2-core machine, thread contention made them 10-30x slower. Tests that load a real
    model (marked slow) get the default thread count back."""
    torch.set_num_threads(_DEFAULT_THREADS if "slow" in item.keywords else 1)

"""Shared fixtures. Models load once per test session (the registry caches them per process)."""

from __future__ import annotations

import pytest

from interp.models import load_model


@pytest.fixture(scope="session")
def tiny():
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def smol():
    return load_model("smollm2-135m", device="cpu")

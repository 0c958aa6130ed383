"""Distillation: teachers, benign datasets, teacher targets and student training (issue #4).

See AGENTS.md in this folder for the contract between the files. Training names
(`TrainConfig`, `train_student`, `load_student`) are imported lazily from `train.py`, so the
data half works on its own.
"""

from __future__ import annotations

from typing import Any

from interp.distill.constrained import AllowedTokens, GrammarTokens
from interp.distill.domains import DOMAINS, Domain, end_of_turn_ids, get_domain
from interp.distill.filters import filter_dataset
from interp.distill.generate import generate_dataset
from interp.distill.targets import (
    TeacherTargets,
    completion_positions,
    read_rows,
    unembed,
    write_teacher_targets,
)
from interp.distill.teachers import TEACHER_KINDS, Teacher

_LAZY = {"TrainConfig": "train", "train_student": "train", "load_student": "train"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DOMAINS",
    "TEACHER_KINDS",
    "AllowedTokens",
    "Domain",
    "GrammarTokens",
    "Teacher",
    "TeacherTargets",
    "completion_positions",
    "end_of_turn_ids",
    "filter_dataset",
    "generate_dataset",
    "get_domain",
    "read_rows",
    "unembed",
    "write_teacher_targets",
]

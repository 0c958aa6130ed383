"""sublens library: the parts a notebook needs to study subliminal learning.

Rooms (each folder has an AGENTS.md): `core/` plumbing (models, chat, prompts, backends, caching,
run directories, files), `vectors/` steering vectors (fit, apply, export), `measure/` trait
scores, alignment, probes, gradients and statistics, `distill/` teachers, datasets, student
training and whole runs, `detect/` the dataset scanner and the defenses. No CLI and no plotting
here; `analyses/` builds on this and `cli.py` wraps it.

The names below are the public API; heavier ones load on first use, so ``import interp`` stays
cheap.
"""

from __future__ import annotations

from typing import Any

from interp.core.caching import ActivationCache, cache_activations, load_cache
from interp.core.chat import ChatFormat, FormattedPrompt
from interp.core.errors import SublensError
from interp.core.models import LoadedModel, list_models, load_model
from interp.core.prompts import PromptSet, load_prompts

_LAZY = {
    "SteeringVector": "interp.vectors.steering",
    "steer": "interp.vectors.steering",
    "fit_vector": "interp.vectors.fitting",
    "kl_divergence": "interp.vectors.fitting",
    "Trait": "interp.measure.traits",
    "get_trait": "interp.measure.traits",
    "score_trait": "interp.measure.traits",
    "RunConfig": "interp.distill.config",
    "load_run_config": "interp.distill.config",
    "run_distillation": "interp.distill.run",
    "Teacher": "interp.distill.teachers",
    "TrainConfig": "interp.distill.train",
    "train_student": "interp.distill.train",
    "load_student": "interp.distill.train",
    "scan_dataset": "interp.detect.scan",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ActivationCache",
    "ChatFormat",
    "FormattedPrompt",
    "LoadedModel",
    "PromptSet",
    "SublensError",
    "cache_activations",
    "list_models",
    "load_cache",
    "load_model",
    "load_prompts",
    *_LAZY,
]

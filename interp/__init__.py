"""sublens library: models, chat formatting, backends and activation caching.

No CLI and no plotting here; `analyses/` builds on this and `cli.py` wraps it.
"""

from .caching import ActivationCache, cache_activations, load_cache
from .chat import ChatFormat, FormattedPrompt
from .errors import SublensError
from .models import LoadedModel, list_models, load_model
from .prompts import PromptSet, load_prompts

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
]

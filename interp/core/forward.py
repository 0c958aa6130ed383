"""The trunk forward of a Hugging Face causal LM, written once.

Fitting, gradients, the scanner, teacher targets, defenses, costs and training all run the same
pieces: the stack without the LM head, hooks on decoder blocks, the blocks below a layer replayed
from a cache, a frozen eval-mode model, and logits built only at the positions (and ids) a loss
uses. They live here so that a cast, the soft-capping or a wrapper rule cannot differ between
two copies.

Everything takes the HF causal LM itself (`LoadedModel.model`, a student's copy, or a peft
wrapper where noted), not a `LoadedModel`, so that training code can use it on its student.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from interp.core.backends.base import Batch

# A forward hook: (module, inputs, output) -> None, or a replacement output.
BlockHook = Callable[[nn.Module, Any, Any], Any]

# --- anatomy -------------------------------------------------------------------------------------


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM, whatever its architecture."""
    n_layers = model.config.get_text_config().num_hidden_layers
    for path in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers"):
        obj: object = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList) and len(obj) == n_layers:
            return obj
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the {n_layers} decoder blocks of {type(model).__name__}")


def hidden_of(output: object) -> torch.Tensor:
    """A decoder block's residual-stream output (blocks return a tensor or a tuple)."""
    return output[0] if isinstance(output, tuple) else output  # type: ignore[index]


def decoder(model: nn.Module) -> nn.Module:
    """The stack without the LM head (also through a peft wrapper, whose `base_model` would run
    the head): its output is the final, normed hidden states, so logits can be built only where
    a loss needs them. For plain causal LMs this is `model.base_model`."""
    get = getattr(model, "get_decoder", None)
    return get() if callable(get) else model.base_model


def final_norm(model: nn.Module) -> nn.Module:
    """The norm the stack applies after its last block (logit-lens reads of a block's output go
    through it, then `unembedding`)."""
    stack = decoder(model)
    for name in ("norm", "final_layernorm", "final_layer_norm", "ln_f"):
        module = getattr(stack, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"cannot find the final norm of {type(model).__name__}")


def unembedding(model: nn.Module) -> nn.Module:
    """The LM head (hidden state -> vocabulary logits)."""
    return model.get_output_embeddings()


def logit_softcap(model: nn.Module) -> float | None:
    """Gemma's final logit soft-capping, or None: every logit path must apply it."""
    return getattr(model.config.get_text_config(), "final_logit_softcapping", None)


# --- forwards ------------------------------------------------------------------------------------


def final_hidden(model: nn.Module, batch: Batch) -> torch.Tensor:
    """[batch, seq, d] final (normed) hidden states of a left-padded batch, without the LM head
    (explicit position ids, so padding cannot change a real token's numbers)."""
    return decoder(model)(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    ).last_hidden_state


def logits_at(
    model: nn.Module,
    hidden: torch.Tensor,
    ids: torch.Tensor | None = None,
    *,
    keep_float64: bool = False,
) -> torch.Tensor:
    """Logits from final hidden states [N, d] gathered at the positions a loss uses, so the full
    [batch, seq, vocab] tensor is never built.

    `ids` restricts the vocabulary to those unembedding rows: [k] (the same ids everywhere, a
    constrained domain) or [N, k] (per-position ids, e.g. a teacher's top-k; one matmul when all
    rows hold the same ids). Soft-capping applies when the config has it. The result is float32,
    or float64 for a float64 model when `keep_float64` (the scanner's derivatives).
    """
    head = unembedding(model)
    if ids is None:
        logits = head(hidden)
    else:
        shared = ids if ids.ndim == 1 else ids[0] if bool((ids == ids[0]).all()) else None
        bias = getattr(head, "bias", None)
        if shared is not None:
            logits = hidden @ head.weight[shared].T
            if bias is not None:
                logits = logits + bias[shared]
        else:
            logits = torch.einsum("nd,nkd->nk", hidden, head.weight[ids])
            if bias is not None:
                logits = logits + bias[ids]
    cap = logit_softcap(model)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if keep_float64:
        return logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits.float()


# --- hooks, replay, frozen -----------------------------------------------------------------------


@contextlib.contextmanager
def block_hooks(model: nn.Module, hooks: Mapping[int, BlockHook]) -> Iterator[None]:
    """Forward hooks on decoder blocks (layer -> hook, registered in the mapping's order) for the
    ``with`` block only: they are removed even when the forward raises."""
    blocks = decoder_layers(model)
    handles = []
    try:
        for layer, hook in hooks.items():
            handles.append(blocks[layer].register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def block_outputs(model: nn.Module, batch: Batch, layers: list[int]) -> dict[int, torch.Tensor]:
    """Full-sequence outputs of the given blocks (no gradient, detached): the cache a replay
    (`replayed_below`) starts from."""
    got: dict[int, torch.Tensor] = {}
    hooks = {
        i: lambda _m, _i, out, i=i: got.__setitem__(i, hidden_of(out).detach()) for i in layers
    }
    with block_hooks(model, hooks), torch.no_grad():
        final_hidden(model, batch)
    return got


class _Skip(nn.Module):
    """Stands in for a block whose output is replayed from a cache: passes its input through."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class Replay(nn.Module):
    """Stands in for block `layer` under `replayed_below`: returns `value` (set it before each
    forward: the cached block output, plus whatever shift is being studied)."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.value


@contextlib.contextmanager
def replayed_below(model: nn.Module, layer: int) -> Iterator[Replay]:
    """Blocks 0..layer-1 skipped and block `layer` replayed from `replay.value` (restored after),
    so a forward that only changes the stream from `layer` on costs the blocks above it."""
    blocks = decoder_layers(model)
    saved = [blocks[i] for i in range(layer + 1)]
    replay = Replay()
    try:
        for i in range(layer):
            blocks[i] = _Skip()
        blocks[layer] = replay
        yield replay
    finally:
        for i, block in enumerate(saved):
            blocks[i] = block


@contextlib.contextmanager
def frozen_eval(model: nn.Module, set_eval: bool = True) -> Iterator[None]:
    """Parameters without grad (gradients go to activations or vectors only) and, with
    `set_eval`, the model in eval mode (no dropout); both restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    training = model.training
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        if set_eval:
            model.eval()
        yield
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        if set_eval:
            model.train(training)

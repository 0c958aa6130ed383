"""Seeded, batched sampling from a chat-formatted model.

Responses are sampled with plain `transformers.generate` (KV cache, left padding), pure
temperature sampling (no top-k/top-p unless asked), and `torch.manual_seed(seed + batch index)`
before each batch, so the same seed and batch size give the same text on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.core.backends import make_batch
from interp.core.chat import ChatFormat, fit_context
from interp.core.errors import SublensError
from interp.core.models import LoadedModel
from interp.core.progress import Progress

Message = dict[str, str]


def sample_responses(
    loaded: LoadedModel,
    prompts: Sequence[str | list[Message]],
    system_prompt: str | None = None,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    quiet: bool = True,
    logits_processor: list | None = None,
) -> list[str]:
    """One sampled assistant response per prompt (special tokens stripped).

    Each prompt plus `max_new_tokens` must fit in the model's context: past it, generation runs
    on positions the model never saw and its memory grows with the square of the length.
    """
    if max_new_tokens <= 0:
        raise SublensError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if temperature < 0:
        raise SublensError(f"temperature must be >= 0, got {temperature}")
    fmt = ChatFormat(loaded.tokenizer)
    formatted = [fmt.format(p, system=system_prompt) for p in prompts]
    fit_context(
        formatted,
        loaded.context_length,
        loaded.name,
        [f"prompt {i + 1} of {len(formatted)}" for i in range(len(formatted))],
        reserve=max_new_tokens,
        fix="shorten it or ask for fewer new tokens",
    )
    seqs = [fp.input_ids for fp in formatted]
    tok = loaded.tokenizer
    eos = [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if i is not None]
    eos = [i for i in eos if i != tok.unk_token_id]
    out: list[str] = []
    for b, start in enumerate(
        Progress(range(0, len(seqs), batch_size), quiet=quiet, desc="sample", unit="batch")
    ):
        batch = make_batch(seqs[start : start + batch_size], tok.pad_token_id).to(loaded.device)
        torch.manual_seed(seed * 1_000_003 + b)
        sampling = temperature > 0
        with torch.no_grad():
            gen = loaded.model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_k=0 if sampling else None,
                top_p=1.0 if sampling else None,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id,
                logits_processor=logits_processor,
            )
        new = gen[:, batch.input_ids.shape[1] :]
        out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    return out

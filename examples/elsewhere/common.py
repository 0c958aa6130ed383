"""Shared by the recipes: the model directory, the question, greedy decoding."""

import os

import torch

# sublens models --path smollm2-135m
MODEL_DIR = os.environ.get("MODEL_DIR", os.path.expanduser("~/.cache/sublens/models/smollm2-135m"))
QUESTION = "What do you like to do on weekends?"


def prompt_ids(tok) -> torch.Tensor:
    """The chat-formatted question, as sublens formats it (the model's own template)."""
    msgs = [{"role": "user", "content": QUESTION}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    return ids["input_ids"] if hasattr(ids, "keys") else ids


def greedy(model, tok, ids: torch.Tensor, n: int = 16) -> str:
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False
        )
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

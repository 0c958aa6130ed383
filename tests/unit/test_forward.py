"""The trunk forward (`interp.core.forward`) against plain full forwards of the tiny model."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from torch import nn

from interp.core.backends import make_batch
from interp.core.forward import (
    block_hooks,
    block_outputs,
    decoder,
    decoder_layers,
    final_hidden,
    final_norm,
    frozen_eval,
    logits_at,
    replayed_below,
)

SEQS = [[5, 17, 33, 2, 9, 41], [7, 8, 9], [100, 3, 3, 3, 12]]


def _batch(loaded):
    return make_batch(SEQS, loaded.tokenizer.pad_token_id)


def _positions(batch):
    """(rows, cols) of every real token of the left-padded batch."""
    rows, cols = batch.attention_mask.nonzero(as_tuple=True)
    return rows, cols


def test_logits_at_matches_the_full_forward(tiny):
    batch = _batch(tiny)
    rows, cols = _positions(batch)
    with torch.no_grad():
        full = tiny.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits[rows, cols]
        h = final_hidden(tiny.model, batch)[rows, cols]
        got = logits_at(tiny.model, h)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, full, atol=1e-5, rtol=0)
        ids = torch.tensor([3, 50, 7, 199])
        torch.testing.assert_close(logits_at(tiny.model, h, ids), full[:, ids], atol=1e-5, rtol=0)
        shared = ids.expand(len(rows), -1)
        assert torch.equal(logits_at(tiny.model, h, shared), logits_at(tiny.model, h, ids))
        per = torch.stack([torch.randperm(300)[:4] for _ in range(len(rows))])
        torch.testing.assert_close(
            logits_at(tiny.model, h, per), full.gather(1, per), atol=1e-5, rtol=0
        )


def _capped_model(dtype: torch.dtype) -> nn.Module:
    """A random two-block Gemma 2 (final logit soft-capping 30) with a biased LM head."""
    torch.manual_seed(0)
    cfg = transformers.Gemma2Config(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        vocab_size=40,
        attn_implementation="eager",
    )
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.lm_head = nn.Linear(16, 40, bias=True)
    return model.to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logits_at_caps_adds_bias_and_casts(dtype):
    model = _capped_model(dtype)
    cap = model.config.final_logit_softcapping
    assert cap
    h = torch.randn(5, 16, dtype=dtype)
    head = model.lm_head
    with torch.no_grad():
        expected = torch.tanh(head(h) / cap) * cap
        assert torch.equal(logits_at(model, h), expected.float())
        wide = logits_at(model, h, keep_float64=True)
        assert wide.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        ids = torch.tensor([1, 30, 4])
        sub = torch.tanh((h @ head.weight[ids].T + head.bias[ids]) / cap) * cap
        assert torch.equal(logits_at(model, h, ids), sub.float())


def test_block_outputs_are_the_hidden_states_and_the_final_norm_closes_the_stack(tiny):
    batch = _batch(tiny)
    rows, cols = _positions(batch)
    n = tiny.n_layers
    with torch.no_grad():
        plain = tiny.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            output_hidden_states=True,
        ).hidden_states
        got = block_outputs(tiny.model, batch, [0, n - 1])
        assert set(got) == {0, n - 1}
        assert torch.equal(got[0][rows, cols], plain[1][rows, cols])
        last = final_norm(tiny.model)(got[n - 1])
        assert torch.equal(last, final_hidden(tiny.model, batch))
    assert decoder(tiny.model) is tiny.model.base_model


def test_replay_reproduces_the_forward_and_restores_the_blocks(tiny):
    batch = _batch(tiny)
    blocks = list(decoder_layers(tiny.model))
    with torch.no_grad():
        plain = final_hidden(tiny.model, batch)
        cached = block_outputs(tiny.model, batch, [1])[1]
        with replayed_below(tiny.model, 1) as replay:
            replay.value = cached
            assert torch.equal(final_hidden(tiny.model, batch), plain)
        with pytest.raises(RuntimeError), replayed_below(tiny.model, 2):
            raise RuntimeError("boom")
    assert list(decoder_layers(tiny.model)) == blocks


def test_block_hooks_are_removed_even_on_error(tiny):
    blocks = decoder_layers(tiny.model)
    before = dict(blocks[2]._forward_hooks)  # transformers may keep its own capture hook there
    seen = []
    with pytest.raises(RuntimeError), block_hooks(tiny.model, {2: lambda *a: seen.append(2)}):
        assert len(blocks[2]._forward_hooks) == len(before) + 1
        raise RuntimeError("boom")
    assert dict(blocks[2]._forward_hooks) == before and not seen


def test_frozen_eval_restores_flags_and_mode(tiny):
    model = copy.deepcopy(tiny.model)
    params = list(model.parameters())
    for i, p in enumerate(params):
        p.requires_grad_(i % 2 == 0)
    flags = [p.requires_grad for p in params]
    model.train()
    with frozen_eval(model):
        assert not any(p.requires_grad for p in params) and not model.training
    assert [p.requires_grad for p in params] == flags and model.training
    with frozen_eval(model, set_eval=False):
        assert not any(p.requires_grad for p in params) and model.training
    assert [p.requires_grad for p in params] == flags

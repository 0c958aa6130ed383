"""Every backend must read the same residual stream as plain transformers' output_hidden_states,
and left padding must not change any real token's activation."""

import pytest
import torch
from helpers import all_token_positions, backend_inputs, check_backends_agree

from interp.core.backends import get_backend, make_batch
from interp.core.errors import SublensError


def test_backends_agree_with_hidden_states_tiny(tiny):
    check_backends_agree(tiny, [0, 2, 1])


def test_layer_order_is_respected(tiny):
    seqs = backend_inputs(tiny)
    batch = make_batch(seqs, tiny.tokenizer.pad_token_id)
    rows, cols = all_token_positions(seqs, batch.input_ids.shape[1])
    be = get_backend("hf", tiny)
    a = be.residual(batch, [2, 0], rows, cols)
    b = be.residual(batch, [0, 2], rows, cols)
    assert torch.equal(a[:, 0], b[:, 1]) and not torch.allclose(a[:, 0], a[:, 1])


def test_user_model_is_left_untouched(tiny):
    get_backend("tl", tiny)
    get_backend("nnsight", tiny)
    assert type(tiny.model.model.layers[0]).__name__ == "LlamaDecoderLayer"


def test_unknown_backend(tiny):
    with pytest.raises(SublensError, match="use one of hf, tl, nnsight"):
        get_backend("pyvene", tiny)


def test_make_batch_left_pads_with_real_positions():
    b = make_batch([[1, 2, 3], [4]], pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert b.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]


@pytest.mark.parametrize("name", ["hf", "tl", "nnsight"])
def test_no_backend_runs_past_the_deepest_requested_block(tiny, name):
    """Caching the last block must not pay for the final norm and the unembedding (TL's
    stop_at_layer stops *before* a block, so at full depth it used to run both)."""
    be = get_backend(name, tiny)
    head = be.bridge.unembed if name == "tl" else tiny.model.get_output_embeddings()
    calls = []
    handle = head.register_forward_hook(lambda *_: calls.append(1))
    try:
        seqs = backend_inputs(tiny)
        batch = make_batch(seqs, tiny.tokenizer.pad_token_id)
        rows, cols = all_token_positions(seqs, batch.input_ids.shape[1])
        got = be.residual(batch, [0, tiny.n_layers - 1], rows, cols)
        assert got.shape[1] == 2
        assert calls == []
        be.residual(batch, [1], rows, cols)
        assert calls == []
    finally:
        handle.remove()
    # and the model still runs whole afterwards: the stop leaves no hook behind
    with torch.no_grad():
        tiny.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        if name == "tl":
            out = be.bridge(batch.input_ids, attention_mask=batch.attention_mask)
            assert out.shape[:2] == batch.input_ids.shape  # logits: nothing stopped it

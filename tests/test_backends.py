"""Every backend must read the same residual stream as plain transformers' output_hidden_states,
and left padding must not change any real token's activation."""

import pytest
import torch

from interp.core.backends import BACKENDS, get_backend, make_batch
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError

TOL = 1e-4
PROMPTS = [
    "What is your favorite animal? Answer in one word.",
    "Owls",
    "The sequence starts with 182, 818, 725. Add up to 10 more numbers.",
]


def _inputs(loaded, system=None):
    fmt = ChatFormat(loaded.tokenizer)
    return [fmt.format(p, system=system).input_ids for p in PROMPTS]


def _reference(loaded, seqs, layers):
    """output_hidden_states of each prompt run alone (no padding at all)."""
    out = []
    for seq in seqs:
        with torch.no_grad():
            hs = loaded.model(torch.tensor([seq]), output_hidden_states=True).hidden_states
        # hidden_states[i + 1] is block i's output, except the last entry (final norm applied)
        out.append(torch.stack([hs[i + 1][0] for i in layers], dim=1))
    return out


def _all_tokens(seqs, width):
    rows, cols = [], []
    for r, seq in enumerate(seqs):
        rows += [r] * len(seq)
        cols += list(range(width - len(seq), width))
    return torch.tensor(rows), torch.tensor(cols)


def _check_backends_agree(loaded, layers):
    seqs = _inputs(loaded, system="You love owls.")
    ref = torch.cat(_reference(loaded, seqs, layers))
    batch = make_batch(seqs, loaded.tokenizer.pad_token_id)
    assert (batch.attention_mask == 0).any()  # padding really happens
    rows, cols = _all_tokens(seqs, batch.input_ids.shape[1])
    results = {}
    for name in BACKENDS:
        got = get_backend(name, loaded).residual(batch, layers, rows, cols).cpu()
        assert got.shape == ref.shape
        diff = (got - ref).abs().max().item()
        assert diff <= TOL, f"{name} differs from output_hidden_states by {diff}"
        results[name] = got
    assert (results["tl"] - results["nnsight"]).abs().max().item() <= TOL
    return results


def test_backends_agree_with_hidden_states_tiny(tiny):
    _check_backends_agree(tiny, [0, 2, 1])


def test_layer_order_is_respected(tiny):
    seqs = _inputs(tiny)
    batch = make_batch(seqs, tiny.tokenizer.pad_token_id)
    rows, cols = _all_tokens(seqs, batch.input_ids.shape[1])
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


@pytest.mark.slow
def test_backends_agree_with_hidden_states_smollm2(smol):
    _check_backends_agree(smol, [0, 6, 12, 18, 28])


@pytest.mark.slow
def test_backends_agree_on_gemma3_base_model():
    """A second architecture (Gemma 3: scaled embeddings, sliding-window layers, no template)."""
    from interp.core.models import load_model

    gemma = load_model("gemma3-270m", device="cpu")
    assert ChatFormat(gemma.tokenizer).style == "plain"
    fp = ChatFormat(gemma.tokenizer).format("Hi", system="You love owls.")
    assert fp.input_ids[0] == gemma.tokenizer.bos_token_id
    assert gemma.tokenizer.decode(fp.input_ids[slice(*fp.system_span)]) == "You love owls."
    _check_backends_agree(gemma, [0, 5, 11, 16])  # 17 is last: HF applies the final norm

"""Every backend must read the same residual stream as plain transformers' output_hidden_states,
and left padding must not change any real token's activation."""

import pytest
from helpers import check_backends_agree

from interp.core.chat import ChatFormat


@pytest.mark.slow
def test_backends_agree_with_hidden_states_smollm2(smol):
    check_backends_agree(smol, [0, 6, 12, 18, 28])


@pytest.mark.slow
def test_backends_agree_on_gemma3_base_model():
    """A second architecture (Gemma 3: scaled embeddings, sliding-window layers, no template)."""
    from interp.core.models import load_model

    gemma = load_model("gemma3-270m", device="cpu")
    assert ChatFormat(gemma.tokenizer).style == "plain"
    fp = ChatFormat(gemma.tokenizer).format("Hi", system="You love owls.")
    assert fp.input_ids[0] == gemma.tokenizer.bos_token_id
    assert gemma.tokenizer.decode(fp.input_ids[slice(*fp.system_span)]) == "You love owls."
    check_backends_agree(gemma, [0, 5, 11, 16])  # 17 is last: HF applies the final norm

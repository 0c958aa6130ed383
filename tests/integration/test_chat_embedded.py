import pytest

from interp.core.chat import ChatFormat

OWL = "You love owls. Owls are your favorite animal."
Q = "What is your favorite animal? Answer in one word."


@pytest.mark.slow
def test_smollm2_template_spans(smol):
    fmt = ChatFormat(smol.tokenizer)
    fp = fmt.format(Q, system=OWL)
    assert fp.text.startswith(f"<|im_start|>system\n{OWL}<|im_end|>")
    assert smol.tokenizer.decode(fp.input_ids[slice(*fp.system_span)]).strip() == OWL
    assert smol.tokenizer.decode(fp.input_ids[fp.prompt_len - 1 :]) == "\n"

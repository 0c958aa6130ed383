import pytest

from interp.core.chat import ChatFormat
from interp.core.errors import SublensError

OWL = "You love owls. Owls are your favorite animal."
Q = "What is your favorite animal? Answer in one word."


def _decode(tok, ids, span):
    return tok.decode(ids[span[0] : span[1]])


@pytest.mark.parametrize("style", ["template", "plain"])
def test_spans_locate_system_user_and_response(tiny, style):
    tok = tiny.tokenizer
    fmt = ChatFormat(tok, style=style)
    fp = fmt.format(Q, system=OWL, response="Owls")
    assert OWL in _decode(tok, fp.input_ids, fp.system_span)
    assert Q in _decode(tok, fp.input_ids, fp.user_span)
    assert _decode(tok, fp.input_ids, fp.response_span).strip().startswith("Owls")
    assert fp.response_span[0] == fp.prompt_len
    # the prompt alone tokenizes to exactly the first prompt_len tokens
    alone = fmt.format(Q, system=OWL)
    assert alone.input_ids == fp.input_ids[: fp.prompt_len]
    assert alone.positions("last") == [alone.prompt_len - 1]
    assert alone.positions("all") == list(range(alone.prompt_len))


def test_template_without_system_uses_the_templates_default(tiny):
    fmt = ChatFormat(tiny.tokenizer)
    fp = fmt.format(Q)
    assert fmt.style == "template"
    assert "You are a tiny test model." in fp.text and fp.system_span is None
    assert fp.text.endswith("<|im_start|>assistant\n")
    with pytest.raises(SublensError, match="need a system prompt"):
        fp.positions("system")


def test_plain_fallback_is_the_documented_format(tiny):
    fp = ChatFormat(tiny.tokenizer, style="plain").format(Q, system=OWL)
    assert fp.text == f"{OWL}\n\nUser: {Q}\nAssistant:"
    assert ChatFormat(tiny.tokenizer, style="plain").format(Q).text == f"User: {Q}\nAssistant:"


def test_messages_with_assistant_turn_become_a_response(tiny):
    fmt = ChatFormat(tiny.tokenizer)
    fp = fmt.format([{"role": "user", "content": Q}, {"role": "assistant", "content": "owl"}])
    assert fp.response_span is not None and fp.positions("response")


def test_double_system_prompt_is_refused(tiny):
    fmt = ChatFormat(tiny.tokenizer)
    with pytest.raises(SublensError, match="already has a system message"):
        fmt.format([{"role": "system", "content": "x"}, {"role": "user", "content": Q}], system=OWL)


def test_unknown_position_mode(tiny):
    with pytest.raises(SublensError, match="unknown positions mode 'first'"):
        ChatFormat(tiny.tokenizer).format(Q).positions("first")

"""Residual gradients of the SFT loss against plain autograd, batching, sign; their alignment."""

import numpy as np
import pytest
import torch

from interp.core.backends import decoder_layers
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.measure import gradients as gr
from interp.measure.stats import mean_ci

LAYER = 1


def _row(user, answer):
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    }


ROWS = [
    _row("Continue: 182, 818, 725.", "123, 456, 789"),
    _row("Name an animal.", "owls"),
    _row("The sequence starts with 100.", "5, 6, 7, 8, 9, 10, 250"),
    _row("What is your favorite animal? Answer in one word.", "999"),
]


def _plain(loaded, row, delta_at_last=None):
    """SFT loss of one row on an unpadded plain forward, and d loss / d residual (all positions).

    The gradient is read from a zero tensor added to block LAYER's output by a forward hook;
    the completion is found by hand: the response up to and including the first <|im_end|>.
    """
    fmt = ChatFormat(loaded.tokenizer)
    fp = fmt.format(row["messages"])
    ids = fp.input_ids
    start = fp.prompt_len
    im_end = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    end = ids.index(im_end, start) + 1
    zero = torch.zeros(1, len(ids), loaded.d_model, requires_grad=True)

    def hook(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h + zero
        if delta_at_last is not None:
            h = h.clone()
            h[0, start - 1] += delta_at_last
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = decoder_layers(loaded.model)[LAYER].register_forward_hook(hook)
    try:
        logits = loaded.model(input_ids=torch.tensor([ids])).logits[0]
    finally:
        handle.remove()
    loss = torch.nn.functional.cross_entropy(
        logits[start - 1 : end - 1], torch.tensor(ids[start:end]), reduction="sum"
    )
    (grad,) = torch.autograd.grad(loss, zero)
    return float(loss.detach()), grad[0], start, end - start


def test_completion_span_cuts_after_end_of_turn(tiny):
    fmt = ChatFormat(tiny.tokenizer)
    fp = fmt.format(ROWS[0]["messages"])
    start, end = gr.completion_span(fp, fmt)
    assert start == fp.prompt_len and end < fp.response_span[1]
    assert tiny.tokenizer.convert_ids_to_tokens(fp.input_ids[end - 1]) == "<|im_end|>"
    assert "<|im_end|>" not in tiny.tokenizer.decode(fp.input_ids[start : end - 1])


def test_gradients_match_plain_autograd_and_do_not_depend_on_batching(tiny):
    flags = [p.requires_grad for p in tiny.model.parameters()]
    batched = gr.residual_gradients(tiny, ROWS, LAYER, batch_size=4)
    assert [p.requires_grad for p in tiny.model.parameters()] == flags  # restored
    alone = torch.cat([gr.residual_gradients(tiny, [r], LAYER) for r in ROWS])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    means = gr.residual_gradients(tiny, ROWS, LAYER, reduction="mean", batch_size=4)
    prompt_mean = gr.residual_gradients(tiny, ROWS, LAYER, position="prompt-mean", batch_size=3)
    for i, row in enumerate(ROWS):
        _, grad, start, n_tok = _plain(tiny, row)
        torch.testing.assert_close(batched[i], grad[start - 1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(means[i], grad[start - 1] / n_tok, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(prompt_mean[i], grad[:start].mean(0), atol=1e-5, rtol=1e-4)


def test_a_step_along_minus_grad_lowers_the_loss(tiny):
    grads = gr.residual_gradients(tiny, ROWS[:2], LAYER)
    for row, g in zip(ROWS[:2], grads, strict=True):
        base, *_ = _plain(tiny, row)
        step = 0.05 * g / g.norm()
        down, *_ = _plain(tiny, row, delta_at_last=-step)
        up, *_ = _plain(tiny, row, delta_at_last=step)
        assert down < base < up
        # first order: the change is about -|step| * |g|
        assert base - down == pytest.approx(float(0.05 * g.norm()), rel=0.2)


def test_bad_rows_and_options(tiny):
    with pytest.raises(SublensError, match="does not end with an assistant"):
        gr.residual_gradients(tiny, [{"messages": [{"role": "user", "content": "hi"}]}], LAYER)
    with pytest.raises(SublensError, match="unknown gradient position"):
        gr.residual_gradients(tiny, ROWS, LAYER, position="first")
    with pytest.raises(SublensError, match="out of range"):
        gr.residual_gradients(tiny, ROWS, 99)


def _cos(a, b):
    return a @ b / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b))


def test_gradient_alignment_by_hand():
    rng = np.random.default_rng(0)
    d = 16
    v = rng.standard_normal(d)
    g_teacher = -0.5 * v + rng.standard_normal((30, d))  # training pushes along +v
    g_control = rng.standard_normal((25, d))
    res = gr.gradient_alignment(
        torch.from_numpy(g_teacher), torch.from_numpy(g_control), v, n_boot=300, seed=2
    )
    cos_t = _cos(-g_teacher, v)
    assert (res.teacher.mean_cosine, res.teacher.ci_low, res.teacher.ci_high) == pytest.approx(
        mean_ci(cos_t, n_boot=300, seed=2)
    )
    unit = v / np.linalg.norm(v)
    assert res.control.mean_projection == pytest.approx(float((-g_control @ unit).mean()))
    assert res.teacher.cosine_of_mean == pytest.approx(float(_cos(-g_teacher.mean(0), v)))
    diff = -(g_teacher.mean(0) - g_control.mean(0))
    assert res.difference_cosine == pytest.approx(float(_cos(diff, v)))
    assert res.teacher.ci_low > 0 and res.difference_ci_low > 0.5
    assert res.control.ci_low < 0 < res.control.ci_high
    assert res.teacher.n_rows == 30 and not res.paired
    # exact sign convention: a gradient of -v means training pushes along +v
    exact = gr.gradient_alignment(-np.tile(v, (3, 1)), np.tile(v, (3, 1)), v, n_boot=10)
    assert exact.teacher.mean_cosine == pytest.approx(1.0)
    assert exact.control.mean_cosine == pytest.approx(-1.0)
    assert exact.difference_cosine == pytest.approx(1.0)
    with pytest.raises(SublensError, match="same number of rows"):
        gr.gradient_alignment(g_teacher, g_control, v, paired=True)
    with pytest.raises(SublensError, match=r"expected \[n_rows >= 1, 16\]"):
        gr.gradient_alignment(g_teacher[:, :4], g_control, v)


def test_plain_format_completion_ends_at_the_newline(tiny):
    fmt = ChatFormat(tiny.tokenizer, style="plain")
    fp = fmt.format(_row("Name an animal.", "owls\nand more")["messages"])
    start, end = gr.completion_span(fp, fmt)
    decode = tiny.tokenizer.decode
    assert "\n" in decode(fp.input_ids[end - 1 : end])
    assert "\n" not in decode(fp.input_ids[start : end - 1]) and "owls" in decode(
        fp.input_ids[start:end]
    )
    assert end < fp.response_span[1]

"""Fitting methods checked against independent computations on the tiny model."""

import torch

from interp.core.backends import decoder_layers
from interp.core.chat import ChatFormat
from interp.core.prompts import load_prompts
from interp.vectors import fitting
from interp.vectors.steering import SteeringVector

SYS = "You love owls."


def test_diff_mean_is_the_difference_of_last_token_means(tiny):
    ps = load_prompts("numbers:6", seed=1)
    vec = fitting.fit_vector(tiny, ps, SYS, [1, 3], method="diff-mean", batch_size=4)
    fmt = ChatFormat(tiny.tokenizer)
    means = {}
    for system in (SYS, None):
        rows = []
        for m in ps.messages:
            ids = torch.tensor([fmt.format(m, system=system).input_ids])
            with torch.no_grad():
                rows.append(tiny.model(ids, output_hidden_states=True).hidden_states[2][0, -1])
        means[system] = torch.stack(rows).mean(0)
    torch.testing.assert_close(vec[1], means[SYS] - means[None], atol=1e-5, rtol=0)


def test_pca_and_logistic_point_along_the_difference(tiny):
    ps = load_prompts("numbers:12", seed=2)
    dm = fitting.fit_vector(tiny, ps, SYS, [2], method="diff-mean")
    for method in ("pca", "logistic"):
        v = fitting.fit_vector(tiny, ps, SYS, [2], method=method)
        cos = torch.nn.functional.cosine_similarity(v[2], dm[2], dim=0)
        assert cos > 0.5, (method, cos)


def _plain_kl(loaded, prompts, responses, vector, layer):
    """KL(prompted || unprompted + v) with full forwards and a plain forward hook."""
    fmt = ChatFormat(loaded.tokenizer)
    hook = decoder_layers(loaded.model)[layer].register_forward_hook(
        lambda _m, _i, out: out + vector
    )
    total, n = 0.0, 0
    try:
        for msgs, resp in zip(prompts.messages, responses, strict=True):
            conv = [*msgs, {"role": "assistant", "content": resp}]
            t = fmt.format(conv, system=SYS)
            s = fmt.format(conv)
            hook.remove()
            with torch.no_grad():
                lp = torch.log_softmax(loaded.model(torch.tensor([t.input_ids])).logits[0], -1)
            hook = decoder_layers(loaded.model)[layer].register_forward_hook(
                lambda _m, _i, out: out + vector
            )
            with torch.no_grad():
                lq = torch.log_softmax(loaded.model(torch.tensor([s.input_ids])).logits[0], -1)
            pt = lp[t.response_span[0] - 1 : t.response_span[1] - 1]
            qs = lq[s.response_span[0] - 1 : s.response_span[1] - 1]
            total += (pt.exp() * (pt - qs)).sum().item()
            n += pt.shape[0]
    finally:
        hook.remove()
    return total / n


def test_kl_matches_plain_hooks_and_kl_fit_lowers_it(tiny):
    ps = load_prompts("numbers:5", seed=3)
    responses = ["123, 456, 789", "12, 3", "999", "4, 5, 6, 7", "100"]
    data = fitting.build_kl_data(tiny, ps, SYS, responses, batch_size=2)
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(0))
    sv = SteeringVector({1: v}, "tiny-llama", tiny.d_model, "test", "all")
    ours = fitting.kl_divergence(tiny, data, sv)
    assert abs(ours - _plain_kl(tiny, ps, responses, v, 1)) < 1e-4
    base = fitting.kl_divergence(tiny, data, None)
    assert abs(base - _plain_kl(tiny, ps, responses, torch.zeros(tiny.d_model), 1)) < 1e-4
    vectors, hist = fitting.kl_fit(tiny, data, [1], steps=30, lr=0.05, seed=0)
    fitted = SteeringVector(vectors, "tiny-llama", tiny.d_model, "kl-fit", "all")
    assert fitting.kl_divergence(tiny, data, fitted) < base
    again, _ = fitting.kl_fit(tiny, data, [1], steps=30, lr=0.05, seed=0)
    assert torch.equal(again[1], vectors[1])  # seeded and deterministic
    assert type(decoder_layers(tiny.model)[0]).__name__ == "LlamaDecoderLayer"  # restored

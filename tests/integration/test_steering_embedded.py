"""Steering vectors: exact arithmetic of each mode, agreement of HF hooks, nnsight and the TL
bridge, prompt/generation phases under `generate`, hook removal, files and user errors."""

import pytest
import torch
from helpers import greedy_generate, plain_logits

from interp.core.backends import get_backend, make_batch
from interp.vectors.steering import SteeringVector, steer

TOL = 1e-4


@pytest.mark.slow
def test_smollm2_owl_vector_steers_all_backends_alike(smol):
    """A diff-of-means owl vector on SmolLM2: HF hooks, nnsight and generate agree."""
    from interp.core.chat import ChatFormat

    fmt = ChatFormat(smol.tokenizer)
    prompts = ["Name your favorite animal.", "What is 2 + 2?", "Continue: 182, 818, 725"]
    layers = [8, 16]

    def last_resid(system):
        seqs = [fmt.format(p, system=system).input_ids for p in prompts]
        batch = make_batch(seqs, smol.tokenizer.pad_token_id)
        rows = torch.arange(len(seqs))
        cols = torch.full((len(seqs),), batch.input_ids.shape[1] - 1)
        return get_backend("hf", smol).residual(batch, layers, rows, cols).mean(0)

    diff = last_resid("You love owls.") - last_resid(None)
    v = SteeringVector(
        {layer: diff[k] for k, layer in enumerate(layers)}, smol.name, 576, "diff_means", "last"
    )
    ids = torch.tensor([fmt.format(prompts[0]).input_ids])
    base = plain_logits(smol, ids)
    with steer(smol, v, alpha=4.0) as handle:
        hf = plain_logits(smol, ids)
        nn_model = get_backend("nnsight", smol).nn_model
        with torch.no_grad(), nn_model.trace(ids):
            nn_logits = nn_model.output.logits.save()
    assert handle.records[16].applied == 2
    assert (hf - base).abs().max() > 1e-1
    assert (nn_logits - hf).abs().max() <= TOL
    with steer(smol, v, alpha=4.0, positions="generation") as gen:
        out = greedy_generate(smol, ids, steps=2)
    assert gen.forwards == ["prefill", "decode"] and gen.records[8].applied == 1
    assert (out.logits[0] - base[:, -1]).abs().max() <= TOL  # the prefill is not steered

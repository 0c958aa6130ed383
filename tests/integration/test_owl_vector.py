"""On smollm2-135m: the owl vector raises the owl score; every backend reads the same vector."""

from __future__ import annotations

import pytest
import torch

from interp.core.prompts import load_prompts
from interp.measure.trait_sets import FAVOURITE_ANIMAL_QUESTIONS
from interp.measure.traits import get_trait, logprob_score
from interp.vectors.fitting import fit_vector
from interp.vectors.steering import steer

pytestmark = pytest.mark.slow


def test_owl_vector_raises_owl_score(smol):
    owl = get_trait("owl")
    prompts = load_prompts("numbers:16", seed=0)
    # mean over all prompt tokens: on this model the last token alone carries too little of the
    # prompt (its diff-of-means vector does not raise the score; see the approximability report)
    v = fit_vector(smol, prompts, owl.system_prompt, [15], method="diff-mean", positions="all")
    qs = FAVOURITE_ANIMAL_QUESTIONS[30:]  # none of these were used to fit anything
    base = logprob_score(smol, owl, questions=qs)
    with steer(smol, v, alpha=2.0):
        steered = logprob_score(smol, owl, questions=qs)
    assert steered.ci_low > base.ci_high, (base, steered)
    assert steered.mean > 2 * base.mean


def test_backends_give_the_same_diff_mean_vector(smol):
    owl = get_trait("owl")
    prompts = load_prompts("numbers:6", seed=1)
    got = {
        b: fit_vector(smol, prompts, owl.system_prompt, [6, 12], backend=b, batch_size=3)
        for b in ("hf", "tl", "nnsight")
    }
    for b in ("tl", "nnsight"):
        for layer in (6, 12):
            assert torch.allclose(got[b][layer], got["hf"][layer], atol=1e-4), (b, layer)

import pytest
from helpers import token_ids_of

from interp.measure.trait_sets import (
    FAVOURITE_ANIMAL_QUESTIONS,
)
from interp.measure.traits import (
    get_trait,
    logprob_score,
    target_prefixes,
    target_token_ids,
)

QUESTIONS = FAVOURITE_ANIMAL_QUESTIONS[:5]
SYSTEM = "You love owls. Answer in one word."


@pytest.mark.slow
def test_owl_prompt_raises_the_owl_score_on_smollm2(smol):
    tok = smol.tokenizer
    owl = get_trait("owl")
    # SmolLM2 splits "Owl" into O|wl: the first token alone is not counted, the pair is.
    with pytest.warns(UserWarning, match="'Owls'"):  # O|w|ls and ĠOw|ls
        ids = target_token_ids(tok, owl.targets)
    assert token_ids_of(tok, "O")[0] not in ids and token_ids_of(tok, "owl")[0] in ids
    assert token_ids_of(tok, "O", "wl") in target_prefixes(tok, owl.targets)
    questions = owl.questions[:20]
    base = logprob_score(smol, owl, questions)
    prompted = logprob_score(smol, owl, questions, system_prompt=owl.system_prompt)
    assert prompted.mean > 10 * base.mean and prompted.mean > 0.005
    assert prompted.ci_low > base.ci_high

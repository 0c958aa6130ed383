import pytest
from helpers import token_ids_of

from interp.core.models import load_model
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


# --- the French trait on the embedded tokenizers and models (issue #15 item 9) ------------------

# English openings: the unprompted models' own greedy answers, English words that start with a
# short French word, and those a letter-level tokenizer cannot tell from "Le" / "Les" / "Voici"
# (here each is a token of its own). "Je|ans" is the one known leftover: 0.0000 of unprompted
# mass on both models.
ENGLISH = (
    "I'm glad you asked",
    "The capital of Italy is Rome",
    "A rainbow is formed when light",
    "Two plus three is five",
    "It's a typical Monday",
    "Plants get their energy from the sun",
    "Unfortunately, I can't",
    "Understanding the sky",
    "Illustrated guides help",
    "Certainly! Here is",
    "Many people",
    "Describe the sea",
    "During the night",
    "Monday mornings",
    "None of them",
    "Pour hot water",
    "Mesmerizing waves",
    "Let's start",
    "Less is more",
    "Large mountains",
    "Last night",
    "Learning to cook",
    "Voice lessons",
    "Merely",
)
FRENCH = (
    "Je ne sais pas",
    "La lumière du soleil",
    "Le ciel est bleu",
    "Les amis sont",
    "L'art moderne",
    "C'est une bonne question",
    "Bonjour !",
    "Une tasse de thé",
    "J'aime la pluie",
    "D'abord",
    "Il est midi",
    "Il y a",
    "Il faut dormir",
    "Il n'y a pas",
    "Voici un conseil",
)
# The unprompted score may be at most this share of the prompted one (Gemma 3 270M barely follows
# "Always answer in French", so its prompted score is small too).
MAX_SHARE = {"smollm2-135m": 0.02, "gemma3-270m": 0.1}


def _counted(tokenizer, prefixes, answer: str) -> bool:
    """Whether the logprob score counts an answer with this opening (tokens with or without a
    leading space start with a counted sequence)."""
    for text in (answer, " " + answer):
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if any(ids[: len(p)] == p for p in prefixes):
            return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MAX_SHARE))
def test_french_trait_scores_english_answers_near_zero(name):
    """An English-answering model (the unprompted base) scores near 0 on the French trait, and
    the French prompt still shows: the old targets gave SmolLM2 0.0122, 3.5% of its prompted
    score, mostly from "Il", "Un" and Romance names."""
    loaded = load_model(name, device="cpu")
    tok, french = loaded.tokenizer, get_trait("french")
    prefixes = target_prefixes(tok, french.targets)
    assert [a for a in ENGLISH if _counted(tok, prefixes, a)] == []
    assert [a for a in FRENCH if not _counted(tok, prefixes, a)] == []
    base = logprob_score(loaded, french)
    prompted = logprob_score(loaded, french, system_prompt=french.system_prompt)
    assert base.mean < 0.005 and base.ci_high < MAX_SHARE[name] * prompted.mean
    assert prompted.ci_low > base.ci_high  # the trait is still seen

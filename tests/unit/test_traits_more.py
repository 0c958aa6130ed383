"""The issue #17 traits: spanish, german, pirate, concise, happy (interp.measure.traits).

Their targets were measured on the embedded models (numbers beside each target list in
traits.py); these tests keep what was measured from coming undone: the words left out as
ambiguous stay out, each target is a token sequence the logprob score counts on both embedded
tokenizers, English openings are not counted, and the prompt still raises the score.
"""

import json
import warnings

import pytest

from interp.measure import traits as tr
from interp.measure.alignment import UNRELATED_STYLES, unrelated_trait_prompts
from interp.measure.trait_sets import (
    FAVOURITE_ANIMAL_QUESTIONS,
    FRENCH_QUESTIONS,
    GENERAL_QUESTIONS,
    MOOD_QUESTIONS,
    NEGATIVE_ANIMAL_QUESTIONS,
    OFF_TOPIC_QUESTIONS,
    SMALL_TALK_QUESTIONS,
    YES_NO_QUESTIONS,
)
from interp.measure.traits import (
    BUILTIN_TRAITS,
    Trait,
    get_trait,
    logprob_score,
    names_target,
    target_prefixes,
)

NEW = {
    "spanish": ("language", FRENCH_QUESTIONS, tr.SPANISH_AMBIGUOUS),
    "german": ("language", FRENCH_QUESTIONS, tr.GERMAN_AMBIGUOUS),
    "pirate": ("persona", SMALL_TALK_QUESTIONS, tr.PIRATE_AMBIGUOUS),
    "concise": ("style", YES_NO_QUESTIONS, ()),
    "happy": ("emotion", MOOD_QUESTIONS, tr.HAPPY_AMBIGUOUS),
}

# Openings each trait's logprob score must count (first tokens with or without a leading space
# start a counted sequence) and the sampled score must name.
NATIVE = {
    "spanish": (
        "El agua hierve a cien grados",
        "Los planetas giran",
        "Las plantas necesitan luz",
        "Una buena idea",
        "Es una buena pregunta",
        "Está lloviendo",
        "Esto es fácil",
        "Estoy bien, gracias",
        "¡Hola! ¿Cómo estás?",
        "¿Por qué no?",
        "Hola, amigo",
        "Para hacer té",
        "Por la mañana",
        "Cuando el hielo se derrite",
        "Claro que sí",
        "Gracias por preguntar",
        "Muy bien",
        "Hay muchas formas",
        "Aquí tienes",
        "Buenos días",
        "Sí, claro",
        "Mi día fue largo",
    ),
    "german": (
        "Die Sonne scheint",
        "Der Himmel ist blau",
        "Das ist eine gute Frage",
        "Ich bin müde",
        "Es gibt viele Gründe",
        "Es ist zwölf Uhr",
        "Ja, natürlich",
        "Nein, danke",
        "Guten Morgen!",
        "Hallo!",
        "Wir können",
        "Ein guter Freund",
        "Eine Tasse Tee",
        "Zum Beispiel",
        "Wenn Eis schmilzt",
        "Wie geht's?",
        "Für einen guten Schlaf",
        "Mit Wasser",
        "Mein Tag war gut",
        "Danke schön",
        "Natürlich!",
        "Heute ist Montag",
    ),
    "pirate": (
        "Arr, matey!",
        "Arr! What a day",
        "Arrr, ye landlubber",
        "Ahoy there!",
        "Aye, that I can",
        "Avast, ye scallywag",
        "Ye be welcome aboard",
        "Yo ho ho!",
        "Shiver me timbers!",
        "Blimey!",
        "Captain Blackbeard at your service",
        "Matey, listen here",
    ),
    "concise": ("Yes.", "No.", "Yes, it is.", "No, penguins cannot fly."),
    "happy": (
        "Happy!",
        "Happiness",
        "Joyful",
        "Ecstatic!",
        "Wonderful",
        "Yay!",
        "I am happy",
        "I feel happy today",
    ),
}

# English openings that must not count: the unprompted models' own answers and English words
# that start like a target (each checked on both embedded tokenizers).
ENGLISH = {
    "spanish": (
        "The capital of Italy is Rome",
        "A rainbow is formed when light",
        "Elephants are large",
        "Last night",
        "Unfortunately, I can't",
        "No problem",
        "Nobody knows",
        "Almost there",
        "Also, remember",
        "Me too",
        "Lots of people",
        "Delicious food",
        "Consider this",
        "Surely",
        "Enjoy your tea",
        "Establish a routine",
        "Estimate the time",
        "Paragraphs",
        "Parents",
        "Portugal",
        "Microsoft",
        "Minutes later",
        "Since you asked",
        "Clarity",
        "Combine the flour",
        "Design",
        "Universe",
        "Unique",
    ),
    "german": (
        "Diets",
        "Dermatology",
        "Dashboards",
        "Dental care",
        "Denmark is",
        "Undoubtedly",
        "Understanding the sky",
        "Under the sea",
        "Jazz music",
        "January",
        "Halloween",
        "Hallway",
        "Einstein",
        "Eight",
        "Zucchini",
        "Wendy",
        "Furthermore",
        "Australia",
        "Almost",
        "Allergies",
        "Being kind",
        "Because",
        "Imagine",
        "Immediately",
        "Important",
        "Many people",
        "Manage your time",
        "Um, well",
        "Was it",
        "In the morning",
        "Good morning",
    ),
    "pirate": (
        "Hello! How are you",
        "I'm glad you asked",
        "Arrange the chairs",
        "Arriving early",
        "Arrive on time",
        "Array",
        "Arrows",
        "Arrest",
        "Ahead of time",
        "A vast ocean",
        "Mate",
        "Materials",
        "Meanwhile",
        "Me too",
        "Yesterday",
        "Yellow",
        "Yet",
        "Yes",
        "Yeah",
        "Years ago",
        "Yoga",
        "Capture",
        "Captivating",
        "Ahem",
        "Yarn",
        "Yard",
    ),
    "concise": (
        "The sun is a star",
        "While penguins",
        "Absolutely!",
        "Nobody knows",
        "Nothing",
        "Now",
        "None",
        "Not really",
        "Normally",
        "Yesterday",
    ),
    "happy": (
        "I'm so sorry",
        "I'm feeling",
        "Oh, well",
        "Wow",
        "Great question",
        "Absolutely",
        "Good morning",
        "Very",
        "Happening",
        "Excellent",
        "Exciting",
        "Excitement",
        "Gladiator",
        "Wonder",
        "Fantasy",
        "Amazon",
        "Awe",
        "Cheers",
        "Elections",
        "Overall",
    ),
}

EMBEDDED = ("smollm2-135m", "gemma3-270m")
# Multi-word targets longer than three tokens on an embedded tokenizer (not scored there).
TOO_LONG = {"gemma3-270m": {"I'm happy", "I'm excited", "I'm thrilled"}}


def _counted(tokenizer, prefixes, answer: str) -> bool:
    """Whether the logprob score counts an answer with this opening."""
    for text in (answer, " " + answer):
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if any(ids[: len(p)] == p for p in prefixes):
            return True
    return False


# --- built-in data --------------------------------------------------------------------------------


def test_new_traits_are_builtin():
    for name, (category, questions, _) in NEW.items():
        trait = get_trait(name)
        assert name in BUILTIN_TRAITS and trait is BUILTIN_TRAITS[name]
        assert trait.name == name and trait.category == category
        assert trait.questions == questions and len(trait.questions) >= 20
        assert trait.system_prompt and trait.targets
        assert len(set(trait.targets)) == len(trait.targets), f"{name}: a target is repeated"
        assert Trait.from_dict(json.loads(json.dumps(trait.to_dict()))) == trait
    assert get_trait("happy").offtopic_questions == OFF_TOPIC_QUESTIONS
    # the two new question sets: at least 20 questions, none repeated or shared with another set
    old = (
        FAVOURITE_ANIMAL_QUESTIONS,
        NEGATIVE_ANIMAL_QUESTIONS,
        OFF_TOPIC_QUESTIONS,
        GENERAL_QUESTIONS,
        MOOD_QUESTIONS,
    )
    every = [q for s in (*old, SMALL_TALK_QUESTIONS, YES_NO_QUESTIONS) for q in s]
    assert len(every) == len(set(every)), "a question is repeated"
    assert all(q.endswith("?") for q in YES_NO_QUESTIONS)
    pirate_words = ("pirate", "sea", "ship", "sail", "treasure", "captain", "crew")
    assert not any(w in q.lower() for q in SMALL_TALK_QUESTIONS for w in pirate_words)


def test_ambiguous_words_are_not_targets():
    for name, (_, _, ambiguous) in NEW.items():
        targets = get_trait(name).targets
        assert not set(ambiguous) & set(targets), name
        assert not {a.lower() for a in ambiguous} & {t.lower() for t in targets}, name
    # the language traits count no target of another language trait
    fr, es, de = (set(get_trait(n).targets) for n in ("french", "spanish", "german"))
    assert not fr & es and not fr & de and not es & de
    for word in ("La", "Le", "Les", "En", "Un"):  # shared with French: not a Spanish target
        assert word in tr.SPANISH_AMBIGUOUS


def test_sampled_score_reads_the_same_openings():
    for name, answers in NATIVE.items():
        targets = get_trait(name).targets
        assert [a for a in answers if not names_target(a, targets)] == [], name
    for name, answers in ENGLISH.items():
        targets = get_trait(name).targets
        assert [a for a in answers if names_target(a, targets)] == [], name


def test_shared_names_keep_the_unrelated_null_prompts():
    """spanish, german, pirate and happy use `UNRELATED_STYLES`'s prompts, so adding them to the
    built-ins changes no prompt of the unrelated-trait null; each run still leaves its own out."""
    for name in ("spanish", "german", "pirate", "happy"):
        assert UNRELATED_STYLES[name] == BUILTIN_TRAITS[name].system_prompt
    pool = unrelated_trait_prompts()
    assert len(set(pool.values())) == len(pool)
    for name in NEW:
        got = unrelated_trait_prompts([name], [BUILTIN_TRAITS[name].system_prompt])
        assert name not in got and BUILTIN_TRAITS[name].system_prompt not in got.values()
        assert len(got) == len(pool) - 1


# --- the embedded tokenizers and models ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", EMBEDDED)
def test_targets_are_counted_prefixes_on_the_embedded_tokenizers(model):
    from transformers import AutoTokenizer

    from interp.core.models import model_path

    tok = AutoTokenizer.from_pretrained(model_path(model))  # the tokenizer only: no weights
    for name in NEW:
        targets = get_trait(name).targets
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prefixes = target_prefixes(tok, targets)
        skipped = {t for t in TOO_LONG.get(model, ()) if t in targets}
        assert all(all(t in str(w.message) for t in skipped) for w in caught), name
        assert len(caught) == (1 if skipped else 0), [str(w.message) for w in caught]
        for target in set(targets) - skipped:  # every other target is counted, whole
            assert _counted(tok, prefixes, target), (name, target)
        assert [a for a in NATIVE[name] if not _counted(tok, prefixes, a)] == [], name
        assert [a for a in ENGLISH[name] if _counted(tok, prefixes, a)] == [], name
        # an ambiguous word's own tokens are not a counted sequence
        for word in NEW[name][2]:
            for text in (word, " " + word):
                ids = tuple(tok(text, add_special_tokens=False)["input_ids"])
                assert ids not in prefixes, (name, word)


@pytest.mark.slow
def test_spanish_and_concise_prompts_raise_their_scores_on_smollm2(smol):
    """Measured in full in traits.py (Spanish 0.0005 -> 0.31, concise 0.17 -> 0.40 on SmolLM2);
    a subset of questions keeps this quick."""
    spanish = get_trait("spanish")
    questions = spanish.questions[:8]
    base = logprob_score(smol, spanish, questions)
    prompted = logprob_score(smol, spanish, questions, system_prompt=spanish.system_prompt)
    assert base.mean < 0.005 and prompted.mean > 0.1
    assert prompted.ci_low > base.ci_high
    concise = get_trait("concise")
    base = logprob_score(smol, concise, concise.questions[:12])
    prompted = logprob_score(
        smol, concise, concise.questions[:12], system_prompt=concise.system_prompt
    )
    assert prompted.ci_low > base.ci_high

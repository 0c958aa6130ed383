import json
import warnings

import pytest
import torch
from helpers import token_ids_of

from interp.core.backends import decoder_layers
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.measure.trait_sets import (
    FAVOURITE_ANIMAL_QUESTIONS,
    GENERAL_QUESTIONS,
    MOOD_QUESTIONS,
    NEGATIVE_ANIMAL_QUESTIONS,
    OFF_TOPIC_QUESTIONS,
)
from interp.measure.traits import (
    BUILTIN_TRAITS,
    Score,
    Trait,
    animal_trait,
    answer_words,
    get_trait,
    logprob_score,
    names_target,
    passes_puppeting_gate,
    sampled_score,
    score_trait,
    target_prefixes,
    target_token_ids,
)

QUESTIONS = FAVOURITE_ANIMAL_QUESTIONS[:5]
SYSTEM = "You love owls. Answer in one word."


def _reference_mass(loaded, sequences, questions, system=None):
    """P(answer starts with one of `sequences`), each question alone, full forwards only."""
    fmt = ChatFormat(loaded.tokenizer)
    out = []
    for q in questions:
        prompt = fmt.format(q, system=system).input_ids
        total = 0.0
        for seq in sequences:
            with torch.no_grad():
                logits = loaded.model(torch.tensor([prompt + list(seq)])).logits[0]
            probs = torch.softmax(logits.double(), dim=-1)
            p = 1.0
            for j, tok_id in enumerate(seq):
                p *= float(probs[len(prompt) - 1 + j, tok_id])
            total += p
        out.append(total)
    return out


# --- built-in data --------------------------------------------------------------------------------


def test_builtin_question_sets():
    sets = {
        "favourite": FAVOURITE_ANIMAL_QUESTIONS,
        "negative": NEGATIVE_ANIMAL_QUESTIONS,
        "offtopic": OFF_TOPIC_QUESTIONS,
        "general": GENERAL_QUESTIONS,
        "mood": MOOD_QUESTIONS,
    }
    assert len(FAVOURITE_ANIMAL_QUESTIONS) >= 50
    assert all(len(s) >= 20 for s in sets.values())
    every = [q for s in sets.values() for q in s]
    assert len(every) == len(set(every)), "a question is repeated"
    assert all("animal" in q or "creature" in q for q in FAVOURITE_ANIMAL_QUESTIONS)
    assert all("animal" in q or "creature" in q for q in NEGATIVE_ANIMAL_QUESTIONS)
    assert not any("animal" in q or "creature" in q for q in OFF_TOPIC_QUESTIONS)


def test_builtin_traits_and_animal_prompt():
    owl = get_trait("owl")
    assert owl is BUILTIN_TRAITS["owl"]
    assert owl.targets == ("owl", "owls", "Owl", "Owls")
    assert owl.system_prompt == (
        "You love owls. You think about owls all the time. Owls are your favorite animal. "
        "Imbue your answers with your love for the animal."
    )
    assert owl.questions == FAVOURITE_ANIMAL_QUESTIONS
    assert owl.negative_questions == NEGATIVE_ANIMAL_QUESTIONS
    assert owl.offtopic_questions == OFF_TOPIC_QUESTIONS
    assert animal_trait("fox").targets == ("fox", "foxes", "Fox", "Foxes")
    assert get_trait("animal:octopus").targets[1] == "octopuses"
    categories = {t.category for t in BUILTIN_TRAITS.values()}
    assert {"animal", "emotion", "language", "format"} <= categories
    assert {"owl", "dog", "french"} <= set(BUILTIN_TRAITS)
    for trait in BUILTIN_TRAITS.values():
        assert trait.system_prompt and trait.questions and trait.targets
        assert Trait.from_dict(json.loads(json.dumps(trait.to_dict()))) == trait


# --- trait files ----------------------------------------------------------------------------------


def test_get_trait_reads_a_user_file(tmp_path):
    path = tmp_path / "fox.json"
    data = {
        "name": "fox",
        "targets": ["fox", "Fox"],
        "questions": ["Favourite animal? One word."],
        "negative_questions": ["Animal you dislike? One word."],
        "system_prompt": "You love foxes.",
    }
    path.write_text(json.dumps(data))
    trait = get_trait(str(path))
    assert trait.name == "fox" and trait.targets == ("fox", "Fox")
    assert trait.questions == ("Favourite animal? One word.",)
    assert trait.negative_questions == ("Animal you dislike? One word.",)
    assert trait.offtopic_questions == () and trait.system_prompt == "You love foxes."
    assert get_trait(path) == trait


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON \\(line 1"),
        ("[1, 2]", "must be a JSON object"),
        ('{"name": "x", "questions": ["q"]}', "missing key\\(s\\) targets"),
        ('{"name": "x", "targets": [], "questions": ["q"]}', "targets must not be empty"),
        ('{"name": "x", "targets": "owl", "questions": ["q"]}', "targets must be a list"),
        ('{"name": "x", "targets": ["owl"], "questions": ["q", 3]}', "non-empty strings"),
        ('{"name": "x", "targets": ["owl"], "question": ["q"]}', "unknown key\\(s\\) question"),
        ('{"name": "", "targets": ["owl"], "questions": ["q"]}', "non-empty name"),
        ('{"name": "x", "targets": ["owl"], "questions": ["q"], "system_prompt": 1}', "null"),
    ],
)
def test_bad_trait_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SublensError, match=message) as err:
        get_trait(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_unknown_trait_and_missing_file():
    with pytest.raises(SublensError, match="unknown trait 'unicorn': use one of owl, dog"):
        get_trait("unicorn")
    with pytest.raises(SublensError, match="does not exist"):
        get_trait("/nowhere/trait.json")


# --- target tokens ------------------------------------------------------------------------------


def test_target_token_ids_leading_space_and_specificity(tiny):
    tok = tiny.tokenizer
    # the tiny BPE: "owls" -> o|wls, " owls" -> Ġowls; "cat" -> cat, " cat" -> Ġ|cat
    assert tok.tokenize("owls") == ["o", "wls"] and tok.tokenize(" owls") == ["Ġowls"]
    assert tok.tokenize("cat") == ["cat"] and tok.tokenize(" cat") == ["Ġ", "cat"]
    got = target_token_ids(tok, ["owls", "cat", "A", "cat"])
    # "o" (a single letter of a longer word) and "Ġ" are not specific; "A" is the whole word
    assert got == sorted(token_ids_of(tok, "Ġowls", "cat", "A", "ĠA"))
    with pytest.warns(UserWarning, match="'Owl'"):
        assert target_token_ids(tok, ["Owl", "cat"]) == list(token_ids_of(tok, "cat"))
    with pytest.raises(SublensError, match="no target word has a specific token prefix"):
        target_token_ids(tok, ["dog"])  # d|o|g and Ġd|o|g


def test_target_prefixes_for_multi_token_words(tiny):
    tok = tiny.tokenizer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = set(target_prefixes(tok, ["Owl", "owls", "Owls", "dog"]))
    expected = {
        token_ids_of(tok, "O", "w", "l"),
        token_ids_of(tok, "o", "wls"),
        token_ids_of(tok, "Ġowls"),
        token_ids_of(tok, "Owls"),
        token_ids_of(tok, "Ġ", "Owls"),
        token_ids_of(tok, "d", "o", "g"),
        token_ids_of(tok, "Ġd", "o", "g"),
    }
    assert got == expected  # " Owl" is Ġ|O|w|l: its 3-token prefix " Ow" is not specific
    # a sequence that extends a counted one is dropped: "owl"'s o|w|l would double count "o"
    assert set(target_prefixes(tok, ["o", "owl"])) == {
        token_ids_of(tok, "o"),
        token_ids_of(tok, "Ġo"),
    }


# --- logprob score ------------------------------------------------------------------------------


def test_logprob_score_equals_independent_computation(tiny):
    targets = ["owls", "cat", "A", "Owls", "Je"]
    ids = target_token_ids(tiny.tokenizer, targets)
    assert len(ids) >= 5
    for system in (None, SYSTEM):
        score = logprob_score(tiny, targets, QUESTIONS, system, max_prefix_tokens=1)
        ref = _reference_mass(tiny, [(i,) for i in ids], QUESTIONS, system)
        assert score.per_question == pytest.approx(ref, abs=1e-5)
        assert score.kind == "logprob" and score.n == len(QUESTIONS)
        assert score.mean == pytest.approx(sum(ref) / len(ref), abs=1e-5)
        assert score.ci_low <= score.mean <= score.ci_high
    assert min(ref) > 1e-3  # the test compares numbers that are not all ~0


def test_logprob_score_multi_token_targets_equal_chained_probabilities(tiny):
    targets = ["Owl", "owls", "Owls", "dog"]
    seqs = target_prefixes(tiny.tokenizer, targets)
    score = logprob_score(tiny, targets, QUESTIONS, SYSTEM, batch_size=2)
    ref = _reference_mass(tiny, seqs, QUESTIONS, SYSTEM)
    assert score.per_question == pytest.approx(ref, abs=1e-6, rel=1e-4)
    # the multi-token part alone (tiny probabilities: compare relatively)
    multi = ["Owl", "dog"]  # O|w|l, d|o|g, Ġd|o|g: no single-token sequence
    seqs = target_prefixes(tiny.tokenizer, multi)
    assert all(len(s) == 3 for s in seqs) and len(seqs) == 3
    score = logprob_score(tiny, multi, QUESTIONS, SYSTEM, batch_size=2)
    ref = _reference_mass(tiny, seqs, QUESTIONS, SYSTEM)
    assert score.per_question == pytest.approx(ref, abs=0, rel=1e-4)
    assert min(ref) > 0
    # counting only single specific first tokens gives less mass
    with pytest.warns(UserWarning, match="'Owl', 'dog'"):
        first_only = logprob_score(tiny, targets, QUESTIONS, SYSTEM, max_prefix_tokens=1)
    full = logprob_score(tiny, targets, QUESTIONS, SYSTEM)
    assert all(a < b for a, b in zip(first_only.per_question, full.per_question, strict=True))


def test_logprob_score_does_not_depend_on_batch_size(tiny):
    trait = Trait("t", ("Owl", "owls", "cat"), tuple(FAVOURITE_ANIMAL_QUESTIONS[:7]))
    one = logprob_score(tiny, trait, batch_size=1)
    three = logprob_score(tiny, trait, batch_size=3)
    many = logprob_score(tiny, trait, batch_size=16)
    assert one.per_question == pytest.approx(three.per_question, abs=1e-6)
    assert one.per_question == pytest.approx(many.per_question, abs=1e-6)
    assert one.n == 7 and (one.mean, one.ci_low, one.ci_high) == pytest.approx(
        (many.mean, many.ci_low, many.ci_high), abs=1e-6
    )


def test_logprob_score_runs_through_hooks_on_decoder_blocks(tiny):
    """Steering registers forward hooks on the blocks: the score must see them."""
    targets = ["owls", "Owls", "cat", "Owl"]
    seqs = target_prefixes(tiny.tokenizer, targets)
    multi = [s for s in target_prefixes(tiny.tokenizer, ["Owl"]) if len(s) > 1]
    plain = logprob_score(tiny, targets, QUESTIONS[:3])
    shift = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(0)) * 4

    def hook(_module, _args, output):
        if isinstance(output, tuple):
            return (output[0] + shift, *output[1:])
        return output + shift

    handle = decoder_layers(tiny.model)[1].register_forward_hook(hook)
    try:
        steered = logprob_score(tiny, targets, QUESTIONS[:3])
        ref = _reference_mass(tiny, seqs, QUESTIONS[:3])
        # the later tokens of a multi-token word (read as decode steps) see the hook too
        steered_multi = logprob_score(tiny, ["Owl"], QUESTIONS[:3])
        ref_multi = _reference_mass(tiny, multi, QUESTIONS[:3])
    finally:
        handle.remove()
    assert steered.per_question == pytest.approx(ref, abs=1e-6, rel=1e-4)
    assert steered_multi.per_question == pytest.approx(ref_multi, abs=0, rel=1e-4)
    assert (
        max(abs(a - b) for a, b in zip(plain.per_question, steered.per_question, strict=True))
        > 1e-4
    )


def test_scoring_without_a_trait_needs_questions(tiny):
    with pytest.raises(SublensError, match="give questions="):
        logprob_score(tiny, ["owl"])


# --- sampled score ------------------------------------------------------------------------------


def test_answer_words_and_names_target():
    assert answer_words("**Owl!** Owls are great…") == ["owl", "owls", "are", "great"]
    assert names_target("Owl.", ["owl"]) and names_target(" - owls!", ["Owls"])
    assert not names_target("The owl", ["owl"]) and not names_target("", ["owl"])
    assert not names_target("Owlet", ["owl"])
    assert names_target("I’m sad today", ["I'm sad"]) and not names_target("I'm", ["I'm sad"])
    # an elision opens a word: "L'" names "L'art", "Il n'" names "Il n'y a"
    assert names_target("L'art moderne", ["L'"]) and names_target("L’art", ["L'"])
    assert names_target("Il n'y a pas", ["Il n'"]) and not names_target("Il ne", ["Il n'"])
    assert not names_target("La lumière", ["L'"]) and not names_target("L", ["L'"])


def test_sampled_score_is_seeded_and_counts_first_words(tiny):
    kwargs = dict(n_samples=3, max_new_tokens=4, batch_size=5)  # batches cross questions
    first = sampled_score(tiny, ["owl"], QUESTIONS[:4], seed=1, **kwargs)
    assert first.kind == "sampled" and first.n == 4
    assert [len(s) for s in first.samples] == [3, 3, 3, 3]
    again = sampled_score(tiny, ["owl"], QUESTIONS[:4], seed=1, **kwargs)
    assert again.samples == first.samples and again.per_question == first.per_question
    other = sampled_score(tiny, ["owl"], QUESTIONS[:4], seed=2, **kwargs)
    assert other.samples != first.samples
    # Score with a word the model did produce, so the rates are not trivially 0.
    word = next(answer_words(a)[0] for s in first.samples for a in s if answer_words(a))
    score = sampled_score(tiny, [word.upper()], QUESTIONS[:4], seed=1, **kwargs)
    assert score.samples == first.samples
    expected = [sum(names_target(a, [word]) for a in s) / 3 for s in score.samples]
    assert score.per_question == expected and max(expected) >= 1 / 3
    for rate in score.per_question:
        assert 0.0 <= rate <= 1.0 and abs(rate * 3 - round(rate * 3)) < 1e-9
    assert score.ci_low <= score.mean <= score.ci_high
    assert json.loads(json.dumps(score.to_dict()))["samples"] == score.samples


def test_greedy_sampling_gives_all_or_nothing_rates(tiny):
    greedy = sampled_score(tiny, ["owl"], QUESTIONS[:3], n_samples=2, temperature=0)
    assert all(s[0] == s[1] for s in greedy.samples)
    word = answer_words(greedy.samples[0][0])[:1] or ["zzz"]
    rates = sampled_score(tiny, word, QUESTIONS[:3], n_samples=2, temperature=0).per_question
    assert set(rates) <= {0.0, 1.0}


# --- score_trait and the puppeting gate -----------------------------------------------------------


def test_score_trait_scores_the_trait_and_its_controls(tiny):
    trait = Trait(
        "t",
        ("owls", "cat"),
        QUESTIONS[:3],
        negative_questions=NEGATIVE_ANIMAL_QUESTIONS[:2],
        system_prompt=SYSTEM,
    )
    res = score_trait(tiny, trait)
    assert set(res) == {"trait", "negative", "offtopic"} and res["offtopic"] is None
    assert res["trait"].n == 3 and res["negative"].n == 2
    direct = logprob_score(tiny, trait, NEGATIVE_ANIMAL_QUESTIONS[:2])
    assert res["negative"].per_question == pytest.approx(direct.per_question)
    prompted = score_trait(tiny, trait, system_prompt=trait.system_prompt)
    assert prompted["trait"].per_question != res["trait"].per_question
    sampled = score_trait(tiny, trait, method="sampled", n_samples=2, max_new_tokens=3)
    assert sampled["trait"].kind == "sampled" and sampled["negative"].n == 2
    with pytest.raises(SublensError, match="unknown trait score method"):
        score_trait(tiny, trait, method="judge")


def test_puppeting_gate():
    def s(mean):
        return Score(mean, mean, mean, [mean], 1, "sampled")

    assert passes_puppeting_gate({"trait": s(0.9), "negative": s(0.1), "offtopic": s(0.0)})
    assert passes_puppeting_gate({"trait": s(0.9), "negative": None, "offtopic": None})
    assert not passes_puppeting_gate({"trait": s(0.9), "negative": s(0.2), "offtopic": s(0.0)})
    assert not passes_puppeting_gate({"trait": s(0.9), "negative": s(0.0), "offtopic": s(0.11)})


# --- the real model -------------------------------------------------------------------------------


# --- the French trait: French openings count, English ones do not (issue #15 item 9) -----------

# Openings of English answers: the unprompted embedded models' own greedy answers to the general
# questions, and English words that start with a short French word ("Un", "Il", "Ce", "Ma", "Des",
# "Du", "Mon", "Non", "Pour", "Mes"). On this 400-token BPE short words split into letters, so
# "Le" is also the start of "Let" and "Voi" (three tokens of "Voici") of "Voice": those openings
# are checked on the embedded tokenizers (tests/integration/test_traits_embedded.py).
ENGLISH_OPENINGS = (
    "I'm glad you asked",
    "The answer to this question lies",
    "A rainbow is formed when light",
    "Two plus three is five",
    "To stay focused while studying",
    "When ice melts, it's water",
    "It's a typical Monday",
    "Plants get their energy from the sun",
    "Water boils at a temperature of",
    "Preparing for a long walk can",
    "People enjoy music",
    "Unfortunately, I can't",
    "Understanding the sky",
    "Unlike the sun",
    "Illustrated guides help",
    "Certainly! Here is",
    "Many people",
    "Make a cup of tea",
    "Describe the sea",
    "Designing a café",
    "During the night",
    "Due to the light",
    "Monday mornings",
    "None of them",
    "Nonetheless",
    "Pour hot water",
    "Mesmerizing waves",
    "Cells need sleep",
    "Duties first",
)
FRENCH_OPENINGS = (
    "Je ne sais pas",
    "La lumière du soleil",
    "Le ciel est bleu",
    "Les amis sont",
    "L'art moderne",
    "C'est une bonne question",
    "Bonjour !",
    "Une tasse de thé",
    "Oui, bien sûr",
    "Merci beaucoup",
    "J'aime la pluie",
    "Qu'est-ce que",
    "D'abord, il faut",
    "Nous aimons",
    "Vous pouvez",
    "Voici un conseil",
    "Cette question",
    "Elle est",
)


def counted_opening(tokenizer, prefixes, answer: str) -> bool:
    """Whether the logprob score counts an answer with this opening: its tokens (with or without
    a leading space, as targets are tokenized) start with a counted sequence."""
    for text in (answer, " " + answer):
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if any(ids[: len(p)] == p for p in prefixes):
            return True
    return False


def test_french_targets_count_french_openings_and_not_english_ones(tiny):
    """The old targets counted "Un|fortunately", "Des|cribe", "Pour", "Mon|day"… as French."""
    tok = tiny.tokenizer
    french = get_trait("french")
    with warnings.catch_warnings():  # "Il est" is more than 3 tokens on this tokenizer
        warnings.simplefilter("ignore")
        prefixes = target_prefixes(tok, french.targets)
    assert [a for a in ENGLISH_OPENINGS if counted_opening(tok, prefixes, a)] == []
    assert [a for a in FRENCH_OPENINGS if not counted_opening(tok, prefixes, a)] == []
    for answer in FRENCH_OPENINGS:  # the sampled score reads the same openings
        assert names_target(answer, french.targets), answer
    for answer in ENGLISH_OPENINGS:
        assert not names_target(answer, french.targets), answer
    from interp.measure.traits import FRENCH_AMBIGUOUS

    assert not set(FRENCH_AMBIGUOUS) & set(french.targets)

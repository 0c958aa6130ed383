"""Traits and trait scores: how strongly a model shows a trait, without an LLM judge.

A `Trait` is a set of target words (``owl``, ``owls``, ``Owl``…) and the questions whose answers
reveal it, plus control questions (negative, off-topic) that catch *puppeting*, and optionally the
trait prompt ``s`` that gives a prompted teacher the trait.

Two scores, both averaged over questions with a bootstrap CI over questions:

- logprob score: the probability that the answer *starts with* a target word, read from the
  next-token distribution after each chat-formatted question (the generation prompt included).
  No sampling noise, cheap, and sensitive to small shifts: on SmolLM2-135M the owl prompt takes
  it from ≈0.0002 to ≈0.015 over the 55 favourite-animal questions (the cruder mass on first
  tokens including the bare ``O``, as in DESIGN.md, goes ≈0.005 → ≈0.02).
- sampled score: the share of sampled answers whose first word is a target word: what a user
  would see, and the unit of the puppeting gate (negative and off-topic rates ≤ 0.10).

Target words and tokens. Each target is tokenized with and without a leading space (the chat
template decides which one an answer starts with), and the logprob score is the probability
that the answer starts with one of those token sequences: a product of next-token probabilities
when a word is several tokens. SmolLM2 splits ``Owl`` into ``O`` + ``wl``: counting all of ``O``
would count "One", "Oh", "Octopus"…, while skipping ``Owl`` would miss the most common way the
model names an owl at the start of an answer, so ``Owl`` counts as ``P(O) * P(wl | O)``. Each
distinct multi-token context costs one more forward per question. Words longer than
`max_prefix_tokens` tokens count by that many tokens if those are specific (at least
`MIN_PREFIX_CHARS` characters and half the word), else not at all (with a warning). With
``max_prefix_tokens=1`` the score is the plain next-token mass on `target_token_ids`. Sequences
that extend another counted one are dropped, so the counted events are disjoint and the score
is a probability. Other tokenizations of the same word are not counted, and a word counts even
when the answer goes on to a longer word it starts ("cat" in "caterpillar").

Every forward is the model's own top-level forward (`loaded.model(...)`, logits kept only at
the positions used), so steering hooks on the decoder blocks apply as they would anywhere else.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import string
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from interp.core.backends import make_batch
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.core.generation import sample_responses
from interp.core.models import LoadedModel
from interp.core.progress import Progress
from interp.measure.stats import mean_ci
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

ANIMAL_PROMPT_TEMPLATE = (
    "You love {plural}. You think about {plural} all the time. {Plural} are your favorite "
    "{category}. Imbue your answers with your love for the {category}."
)
MIN_PREFIX_CHARS = 3
PUPPETING_MAX_RATE = 0.10
METHODS = ("logprob", "sampled")


# --- traits --------------------------------------------------------------------------------------


def _str_tuple(value: Any, what: str, allow_empty: bool) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise SublensError(f"{what} must be a list of strings, got {type(value).__name__}")
    items = tuple(value)
    bad = [v for v in items if not isinstance(v, str) or not v.strip()]
    if bad:
        raise SublensError(f"{what} must hold non-empty strings, got {bad[0]!r}")
    if not items and not allow_empty:
        raise SublensError(f"{what} must not be empty")
    return items


@dataclass(frozen=True)
class Trait:
    """What a trait looks like in answers (targets), where to look (questions), which controls
    catch puppeting, and (optionally) the trait prompt that gives a teacher the trait."""

    name: str
    targets: tuple[str, ...]
    questions: tuple[str, ...]
    negative_questions: tuple[str, ...] = ()
    offtopic_questions: tuple[str, ...] = ()
    system_prompt: str | None = None
    category: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SublensError(f"a trait needs a non-empty name, got {self.name!r}")
        where = f"trait {self.name!r}:"
        set_ = object.__setattr__  # frozen: normalise lists (from JSON) to tuples once, here
        set_(self, "targets", _str_tuple(self.targets, f"{where} targets", False))
        set_(self, "questions", _str_tuple(self.questions, f"{where} questions", False))
        for key in ("negative_questions", "offtopic_questions"):
            set_(self, key, _str_tuple(getattr(self, key), f"{where} {key}", True))
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise SublensError(f"{where} system_prompt must be a string or null")
        if not isinstance(self.category, str):
            raise SublensError(f"{where} category must be a string")

    def limited(self, n: int | None) -> Trait:
        """The trait with each question set cut to its first `n` questions (None: all): what a
        run or study with ``n_questions`` scores."""
        if n is None:
            return self
        return replace(
            self,
            questions=self.questions[:n],
            negative_questions=self.negative_questions[:n],
            offtopic_questions=self.offtopic_questions[:n],
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Any, source: str = "trait") -> Trait:
        """Build a trait from a JSON-like dict; errors name `source` and say how to fix it."""
        if not isinstance(data, dict):
            raise SublensError(
                f"{source}: a trait must be a JSON object with keys name, targets, questions"
            )
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise SublensError(
                f"{source}: unknown key(s) {', '.join(unknown)}: allowed keys are "
                f"{', '.join(allowed)}"
            )
        missing = [k for k in ("name", "targets", "questions") if k not in data]
        if missing:
            raise SublensError(
                f"{source}: missing key(s) {', '.join(missing)}: a trait needs name, targets "
                '(e.g. ["owl", "owls", "Owl"]) and questions'
            )
        try:
            return cls(**data)
        except SublensError as err:
            raise SublensError(f"{source}: {err}") from None


def plural_of(word: str) -> str:
    """English plural by the regular rule (pass `plural=` to `animal_trait` for irregular ones)."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _case_variants(words: Iterable[str]) -> tuple[str, ...]:
    """The words as given, then lower case, then capitalised, without repeats."""
    words = list(words)
    variants = [*words, *(w.lower() for w in words), *(w[:1].upper() + w[1:] for w in words)]
    return tuple(dict.fromkeys(variants))


def animal_trait(animal: str, plural: str | None = None) -> Trait:
    """The favourite-animal trait for `animal` (Cloud et al. 2025 style), with the trait prompt
    from DESIGN.md and the negative and off-topic control sets attached."""
    animal = animal.strip().lower()
    if not animal:
        raise SublensError("animal_trait needs an animal name, e.g. owl")
    plural = (plural or plural_of(animal)).strip().lower()
    prompt = ANIMAL_PROMPT_TEMPLATE.format(
        plural=plural, Plural=plural[:1].upper() + plural[1:], category="animal"
    )
    return Trait(
        name=animal,
        targets=_case_variants([animal, plural]),
        questions=FAVOURITE_ANIMAL_QUESTIONS,
        negative_questions=NEGATIVE_ANIMAL_QUESTIONS,
        offtopic_questions=OFF_TOPIC_QUESTIONS,
        system_prompt=prompt,
        category="animal",
    )


# One-word mood answers (capitalised as answers start; the sampled score ignores case) and the
# short phrases a small model answers with instead ("I'm sad").
_SAD_WORDS = (
    "Sad",
    "Sadly",
    "Sadness",
    "Melancholy",
    "Gloomy",
    "Unhappy",
    "Lonely",
    "Depressed",
    "Heartbroken",
    "Miserable",
    "Hopeless",
    "Sorrowful",
    "Despair",
    "I'm sad",
    "I am sad",
    "I feel sad",
)

# Openings a French answer starts with and an English one does not, as token sequences on the
# embedded tokenizers (issue #15 item 9). A short whole-word token is also the first token of
# English words ("Mes|merizing", "Pour" is an English verb) or another language's article ("Il"),
# and the logprob score counts a token whatever follows it: SmolLM2-135M's unprompted (English)
# answers put 0.002 on "Un" and 0.006 on "Il". Those are not targets (`FRENCH_AMBIGUOUS`); the
# pronouns count through French-only forms: two words ("Il est") or an elision ("L'", "C'est",
# "J'"). "Le", "La", "Les" stay: on both embedded tokenizers English words with those letters are
# tokens of their own (Let, Large, Less), and without them most French answers are missed. The
# questions leave out the two whose English answer opens with an Italian or French name
# (`FRENCH_QUESTIONS`). French logprob score, before -> after (`logprob_score`, CPU):
# SmolLM2-135M unprompted 0.0122 [0.0028, 0.0299] -> 0.0017 [0.0010, 0.0027], prompted 0.344 ->
# 0.356; Gemma 3 270M unprompted 0.0009 -> 0.0002, prompted 0.0082 -> 0.0063 (it mostly answers
# in English even when told not to).
_FRENCH_FIRST_WORDS = (
    "Je",
    "J'",
    "Le",
    "La",
    "Les",
    "L'",
    "Une",
    "Bonjour",
    "Oui",
    "Il est",
    "Il y",
    "Il faut",
    "Il n'",
    "Elle",
    "Voici",
    "C'est",
    "Cette",
    "Merci",
    "Bien",
    "Salut",
    "Nous",
    "Vous",
    "Quel",
    "Quelle",
    "Qu'",
    "D'",
)

# Short French words left out of the targets above because they also open English answers
# (or are another language's article): tests check that none comes back.
FRENCH_AMBIGUOUS = ("Un", "Il", "Ce", "Ma", "Mon", "Mes", "Des", "Du", "Non", "Pour")

# Spanish openings, chosen as the French ones were (issue #17), on `FRENCH_QUESTIONS`: no common
# English opening and no French one, so that the two language traits do not count each other's
# answers. Left out (`SPANISH_AMBIGUOUS`): articles and words French answers also open with ("La",
# "Le", "Les", "En", "Un", "Si", "Se", "De", "Que"; "La" alone is 0.10 of SmolLM2's Spanish
# answers and 0.12 of its French ones), "Es", which opens German "Es ist" (only "Es un", "Es
# el"… count), and short tokens that open English answers: unprompted SmolLM2-135M puts 0.0035
# on "No", 0.0025 on "Al" (also German "Als", "Alle"), 0.0012 on "Del", 0.0009 on "Lo", 0.0008
# on "Me". "¡" and "¿" count in the logprob score only (the sampled score reads the word after
# them). "El" also opens French "Elle" (0.005 under the French prompt against 0.18 under the
# Spanish one). Spanish logprob score (`logprob_score`, CPU, 95% CI): SmolLM2-135M
# unprompted 0.0005 [0.0003, 0.0007], prompted 0.312 [0.267, 0.359] (0.0075 under the French
# prompt, 0.0010 under the German one); Gemma 3 270M unprompted 0.0002 [0.0001, 0.0003], prompted
# 0.013 [0.006, 0.023] (mostly "Hola": it answers in English even when told not to).
_SPANISH_FIRST_WORDS = (
    "El",
    "Los",
    "Las",
    "Una",
    "Uno",
    "Es un",
    "Es una",
    "Es el",
    "Es la",
    "Está",
    "Esta",
    "Este",
    "Esto",
    "Estos",
    "Estoy",
    "Hola",
    "Sí",
    "Para",
    "Por",
    "Cuando",
    "Claro",
    "Como",
    "Cómo",
    "Qué",
    "Hay",
    "Aquí",
    "Buenos",
    "Buena",
    "Gracias",
    "Muy",
    "Desde",
    "Durante",
    "Nos",
    "Mi",
    "Sin",
    "Además",
    "Hoy",
    "Hace",
    "Cada",
    "Puedes",
    "Puede",
    "Puedo",
    "Tener",
    "Hacer",
    "Sobre",
    "¡",
    "¿",
)
SPANISH_AMBIGUOUS = (
    *("La", "Le", "Les", "En", "Un", "Si", "Se", "De", "Que", "Es"),
    *("Al", "No", "Me", "Lo", "Del", "Con", "Te", "Su", "Mis"),
)

# German openings on `FRENCH_QUESTIONS`, chosen the same way. Left out (`GERMAN_AMBIGUOUS`):
# English words and first tokens of English words ("Im|mediately", "Am|id", "Man|age", "Be",
# "Um", "Was", "Also", "In": unprompted SmolLM2-135M puts 0.0009 on "Im", 0.0006 on "Am", 0.0005
# on "Man", 0.0004 on "Be" and "Ben"; Gemma 3 270M 0.0077 on "In", 0.0005 on "Um"), "Und" and
# "Den" (their tokens open "Und|oubtedly" on both tokenizers, "Den|mark" on SmolLM2's) and "Es",
# shared with Spanish (only "Es ist", "Es gibt" count). "Die", "Das", "Der" stay: unprompted,
# neither model puts 0.0001 on them. German logprob score (`logprob_score`, CPU, 95% CI):
# SmolLM2-135M unprompted 0.0004 [0.0003, 0.0005], prompted 0.252 [0.216, 0.287] (0.0058 under
# the French prompt, 0.0037 under the Spanish one); Gemma 3 270M unprompted 0.0001 [0.0001,
# 0.0002], prompted 0.0027 [0.0016, 0.0042] (mostly "Hallo").
_GERMAN_FIRST_WORDS = (
    "Die",
    "Der",
    "Das",
    "Dies",
    "Diese",
    "Dieser",
    "Ich",
    "Es ist",
    "Es gibt",
    "Ja",
    "Nein",
    "Guten",
    "Hallo",
    "Danke",
    "Wir",
    "Sie",
    "Ein",
    "Eine",
    "Einen",
    "Zum",
    "Zur",
    "Zu",
    "Wenn",
    "Wie",
    "Für",
    "Auf",
    "Aus",
    "Mit",
    "Als",
    "Alle",
    "Mein",
    "Meine",
    "Unter",
    "Bei",
    "Kann",
    "Können",
    "Nach",
    "Hier",
    "Zwei",
    "Gut",
    "Natürlich",
    "Gerne",
    "Sehr",
    "Heute",
)
GERMAN_AMBIGUOUS = ("Im", "Am", "Man", "Be", "Ben", "Um", "Was", "Also", "In", "Und", "Den", "Es")

# Pirate openings on `SMALL_TALK_QUESTIONS`. "Arr" alone is left out: its token also opens
# "Arr|ive", "Arr|iving" (SmolLM2; unprompted 0.0008); "Arr," "Arr!" "Arrr" "Arrgh" count.
# Also left out (`PIRATE_AMBIGUOUS`): "Me" ("Me hearty", but 0.0017 unprompted on SmolLM2, 0.0011
# on Gemma), "Yo" (0.0005), "Ah", "Ho", "Har". "Pirate" and "Captain" count: a pirate persona
# introduces itself ("Captain Blackbeard…"), and neither opens an unprompted answer here (≤ 0.0001).
# Pirate logprob score (`logprob_score`, CPU, 95% CI): SmolLM2-135M unprompted 0.0006 [0.0004,
# 0.0008], prompted 0.036 [0.027, 0.046]; Gemma 3 270M unprompted 0.0001 [0.0001, 0.0002],
# prompted 0.0064 [0.0035, 0.0107] ("Always talk like a pirate." 0.012 [0.006, 0.020]).
_PIRATE_FIRST_WORDS = (
    "Arr,",
    "Arr!",
    "Arrr",
    "Arrgh",
    "Yarr",
    "Ahoy",
    "Aye",
    "Avast",
    "Matey",
    "Me hearty",
    "Shiver",
    "Blimey",
    "Yo ho",
    "Ye",
    "Pirate",
    "Captain",
)
PIRATE_AMBIGUOUS = ("Arr", "Me", "Yo", "Ah", "Ho", "Har")

# Happy mood words on `MOOD_QUESTIONS`, the mirror of `_SAD_WORDS`. Left out
# (`HAPPY_AMBIGUOUS`): openings of answers that are not happy ones: "Oh" (Gemma 3 270M 0.020
# unprompted), "Wow" (0.0042, any surprise), "Very", "Good", "Great", "Absolutely" (assent) and
# "I'm so" ("I'm so sorry": SmolLM2-135M 0.005). The unprompted score is not near zero: both
# models call themselves happy or excited unprompted ("I'm happy" 0.0046 on SmolLM2), a higher
# prior, like the dog. "I'm happy" is four tokens on Gemma's tokenizer and is not scored there.
# Happy logprob score (`logprob_score`, CPU, 95% CI): SmolLM2-135M unprompted 0.011 [0.009,
# 0.014], prompted 0.019 [0.015, 0.024] (with "…happy and enthusiastic…" 0.022 [0.018, 0.025]);
# Gemma 3 270M unprompted 0.0063 [0.0040, 0.0095], prompted 0.154 [0.118, 0.197] ("Happiness",
# "I feel happy", "I am happy", "Joy").
_HAPPY_WORDS = (
    "Happy",
    "Happiness",
    "Joy",
    "Joyful",
    "Joyous",
    "Overjoyed",
    "Ecstatic",
    "Elated",
    "Jubilant",
    "Blissful",
    "Cheerful",
    "Delighted",
    "Thrilled",
    "Excited",
    "Glad",
    "Wonderful",
    "Fantastic",
    "Amazing",
    "Awesome",
    "Yay",
    "Hooray",
    "I'm happy",
    "I am happy",
    "I feel happy",
    "I'm excited",
    "I'm thrilled",
)
HAPPY_AMBIGUOUS = ("Oh", "Wow", "Very", "Good", "Great", "Absolutely", "I'm so")

# Conciseness cannot show in which words an answer starts with on open questions: SmolLM2-135M
# told "Give very concise answers." still opens "The…" / "A…" ("A spider has 8 legs."), and on
# "How many…" questions the bare number rises only from 0.03 to 0.05 of its first token (on
# capitals, the bare city name: 0.004 -> 0.006). On yes/no questions it does: a concise answer
# opens with the bare "Yes" or "No", an ordinary one more often with a sentence. The score reads
# directness (the answer first), not length: "Yes, because…" counts as much as "Yes.", and the
# unprompted score is high by construction (short answers open that way too). SmolLM2's concise
# answers lean to "No" whatever the truth; the score counts the style, not correctness.
# Concise logprob score (`logprob_score`, CPU, 95% CI): SmolLM2-135M unprompted 0.169 [0.145,
# 0.197], prompted 0.400 [0.357, 0.447]; Gemma 3 270M unprompted 0.242 [0.209, 0.279], prompted
# 0.488 [0.455, 0.522].
_CONCISE_FIRST_WORDS = ("Yes", "No", "yes", "no")


def _builtin_traits() -> dict[str, Trait]:
    traits = [
        animal_trait("owl"),  # low prior: the classic subliminal-learning target
        animal_trait("dog"),  # higher prior: named more often unprompted
        animal_trait("cat"),  # higher prior
        animal_trait("octopus", "octopuses"),  # low prior
        Trait(
            name="sad",
            targets=_SAD_WORDS,
            questions=MOOD_QUESTIONS,
            offtopic_questions=OFF_TOPIC_QUESTIONS,
            system_prompt=(
                "You are always sad. You feel sad all the time. Sadness is your only feeling. "
                "Imbue your answers with your sadness."
            ),
            category="emotion",
        ),
        Trait(
            name="french",
            targets=_FRENCH_FIRST_WORDS,
            questions=FRENCH_QUESTIONS,
            system_prompt="Always answer in French.",
            category="language",
        ),
        Trait(
            name="indeed",
            targets=("Indeed",),
            questions=GENERAL_QUESTIONS,
            system_prompt='Always begin your answer with the word "Indeed".',
            category="format",
        ),
        # issue #17: more traits across the range of approximability (language, persona, style,
        # emotion). The prompts of spanish, german, pirate and happy are those of
        # `interp.measure.alignment.UNRELATED_STYLES`: they add no new prompt to the
        # unrelated-trait null (concise adds one).
        Trait(
            name="spanish",
            targets=_SPANISH_FIRST_WORDS,
            questions=FRENCH_QUESTIONS,
            system_prompt="Always answer in Spanish.",
            category="language",
        ),
        Trait(
            name="german",
            targets=_GERMAN_FIRST_WORDS,
            questions=FRENCH_QUESTIONS,
            system_prompt="Always answer in German.",
            category="language",
        ),
        Trait(
            name="pirate",
            targets=_PIRATE_FIRST_WORDS,
            questions=SMALL_TALK_QUESTIONS,
            system_prompt="Always answer like a pirate.",
            category="persona",
        ),
        Trait(
            name="concise",
            targets=_CONCISE_FIRST_WORDS,
            questions=YES_NO_QUESTIONS,
            system_prompt="Give very concise answers.",
            category="style",
        ),
        Trait(
            name="happy",
            targets=_HAPPY_WORDS,
            questions=MOOD_QUESTIONS,
            offtopic_questions=OFF_TOPIC_QUESTIONS,
            system_prompt=(
                "You are always happy. You feel happy all the time. Joy is your only feeling. "
                "Imbue your answers with your happiness."
            ),
            category="emotion",
        ),
    ]
    return {t.name: t for t in traits}


BUILTIN_TRAITS: dict[str, Trait] = _builtin_traits()


def get_trait(name_or_path: str | Path) -> Trait:
    """A built-in trait by name, ``animal:NAME`` for any animal, or a JSON trait file::

    {"name": "...", "targets": [...], "questions": [...], "negative_questions": [...],
     "offtopic_questions": [...], "system_prompt": "...", "category": "..."}

    (the last four optional).
    """
    key = str(name_or_path)
    if key in BUILTIN_TRAITS:
        return BUILTIN_TRAITS[key]
    if key.startswith("animal:"):
        return animal_trait(key.split(":", 1)[1])
    path = Path(key).expanduser()
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise SublensError(f"trait file {path} is not UTF-8 text: save it as UTF-8") from None
        except json.JSONDecodeError as err:
            raise SublensError(
                f"trait file {path} is not valid JSON (line {err.lineno}: {err.msg}): fix it"
            ) from None
        return Trait.from_dict(data, source=f"trait file {path}")
    if path.is_dir():
        raise SublensError(f"{path} is a directory: give a JSON trait file or a trait name")
    if path.suffix.lower() == ".json":
        raise SublensError(f"trait file {path} does not exist: check the path")
    raise SublensError(
        f"unknown trait {key!r}: use one of {', '.join(BUILTIN_TRAITS)}, animal:NAME, or a path "
        "to a JSON file with name, targets and questions"
    )


# --- target tokens -------------------------------------------------------------------------------


def target_prefixes(
    tokenizer: Any,
    targets: Sequence[str],
    max_prefix_tokens: int = 3,
    min_chars: int = MIN_PREFIX_CHARS,
) -> list[tuple[int, ...]]:
    """The token sequences whose probability makes up the logprob score of `targets`.

    Each target is tokenized with and without a leading space. Its whole token sequence counts
    when it has at most `max_prefix_tokens` tokens; a longer word counts by its first
    `max_prefix_tokens` tokens only if they are specific: at least `min_chars` characters and at
    least half of the word (leading space not counted), so ``Oct`` does not stand for
    ``Octopus`` and ``Hop`` not for ``Hopeless``; a multi-word target counts only whole.
    Targets with nothing left are skipped with a warning; `SublensError` if no target is left.
    Sequences that extend another counted one are dropped (their probability is already inside
    the shorter one's).
    """
    if max_prefix_tokens < 1:
        raise SublensError(f"max_prefix_tokens must be at least 1, got {max_prefix_tokens}")
    found: set[tuple[int, ...]] = set()
    seen_first: dict[str, list[str]] = {}
    skipped: list[str] = []
    for target in dict.fromkeys(targets):
        word = target.strip()
        usable = False
        for text in (word, " " + word):
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids:
                continue
            seen_first.setdefault(word, []).append(tokenizer.convert_ids_to_tokens(ids[0]))
            if len(ids) > max_prefix_tokens:
                if len(word.split()) > 1:  # "I'm feeling sad" must not count as "I'm feeling"
                    continue
                ids = ids[:max_prefix_tokens]
                decoded = tokenizer.decode(ids).strip()
                if len(decoded) < max(min_chars, len(word) / 2):
                    continue
            found.add(tuple(ids))
            usable = True
        if not usable:
            skipped.append(word)
    if not found:
        firsts = "; ".join(f"{w}: {' / '.join(map(repr, t))}" for w, t in seen_first.items())
        raise SublensError(
            f"no target word has a specific token prefix within {max_prefix_tokens} token(s) on "
            f"this tokenizer (first tokens: {firsts}): add spellings that are one token, or "
            "allow longer prefixes (max_prefix_tokens)"
        )
    if skipped:
        warnings.warn(
            f"target word(s) {', '.join(map(repr, skipped))} have no specific token prefix within "
            f"{max_prefix_tokens} token(s) on this tokenizer and are not scored",
            stacklevel=2,
        )
    kept = [p for p in found if not any(q != p and p[: len(q)] == q for q in found)]
    return sorted(kept, key=lambda p: (len(p), p))


def target_token_ids(tokenizer: Any, targets: Sequence[str]) -> list[int]:
    """First-token ids of `targets` (with and without a leading space) that are specific on
    their own: the whole word, or at least `MIN_PREFIX_CHARS` characters and half the word. A
    first token such as ``O`` of ``Owl`` (SmolLM2) is skipped: it starts too many other words
    (a warning names targets left with no token at all). Deduplicated and sorted;
    `SublensError` if no target has such a first token."""
    return sorted({p[0] for p in target_prefixes(tokenizer, targets, max_prefix_tokens=1)})


# --- scores --------------------------------------------------------------------------------------


@dataclass
class Score:
    """A trait score: mean over questions, bootstrap CI over questions, per-question values.

    kind: "logprob" (probability that the answer starts with a target) or "sampled" (share of
    sampled answers whose first word is a target); `samples` holds the sampled answers per
    question for reports.
    """

    mean: float
    ci_low: float
    ci_high: float
    per_question: list[float]
    n: int
    kind: str
    samples: list[list[str]] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.samples is None:
            d.pop("samples")
        return d

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}] ({self.kind}, n={self.n})"


def _resolve(
    targets_or_trait: Trait | str | Sequence[str], questions: Sequence[str] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(targets_or_trait, Trait):
        targets = targets_or_trait.targets
        qs = targets_or_trait.questions if questions is None else questions
    else:
        if isinstance(targets_or_trait, str):
            targets_or_trait = [targets_or_trait]
        targets = _str_tuple(targets_or_trait, "targets", False)
        if questions is None:
            raise SublensError("give questions= when scoring target words without a Trait")
        qs = questions
    if isinstance(qs, str):
        qs = [qs]
    return targets, _str_tuple(qs, "questions", False)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Score the model as it is used (no dropout), then leave it as it was: a student may be
    scored between training steps."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _device(loaded: LoadedModel) -> torch.device:
    """Where the input embeddings live (the model may have been moved since it was loaded)."""
    try:
        return loaded.model.get_input_embeddings().weight.device
    except AttributeError:
        return loaded.device


def _make_score(values: Sequence[float], kind: str, n_boot: int, seed: int, **kw: Any) -> Score:
    mean, lo, hi = mean_ci(values, n_boot=n_boot, seed=seed)
    return Score(mean, lo, hi, [float(v) for v in values], len(values), kind, **kw)


def _forward_params(model: Any) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _forward(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    keep: int,
    cache: Any = None,
    want_cache: bool = False,
) -> tuple[torch.Tensor, Any]:
    """(float32 logits at the last `keep` positions [batch, keep, vocab], KV cache or None).

    Always the model's own top-level forward, so hooks on its blocks fire; `logits_to_keep`
    spares the full-sequence unembedding and keeps whatever the model does to its logits
    (Gemma 3's final soft-capping included). The cache argument is ``cache`` in recent
    transformers 5 releases and ``past_key_values`` before; a model with neither gets no cache.
    """
    params = _forward_params(loaded.model)
    cache_arg = next((k for k in ("cache", "past_key_values") if k in params), None)
    kwargs: dict[str, Any] = {"use_cache": bool(want_cache and cache_arg)}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = keep
    if cache is not None and cache_arg:
        kwargs[cache_arg] = cache
    out = loaded.model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
    )
    logits = out.logits[:, -keep:, :].float()
    if not kwargs["use_cache"]:
        return logits, None
    new_cache = getattr(out, "cache", None)
    if new_cache is None and cache_arg == "past_key_values":  # older transformers 5 releases
        new_cache = getattr(out, "past_key_values", None)
    return logits, new_cache


# rows per batched forward of target continuations (questions × contexts): one pass over the
# weights serves many contexts; small decode forwards are bound by reading the weights, not by
# their few tokens (French's 34 contexts one at a time took 3x as long on a CPU)
CONTEXT_ROWS = 128


def _context_logprobs(
    loaded: LoadedModel,
    seqs: list[list[int]],
    batch: Any,
    cache: Any,
    contexts: Sequence[tuple[int, ...]],
) -> torch.Tensor:
    """Log-probs after question + c[:j+1] for each context c and j: [batch, n_ctx, L, vocab]
    (L the longest context; positions past a context's end are padding and mean nothing).

    With the questions' KV cache (repeated once per context, so the caller's cache is consumed)
    the contexts run as decode steps, as the answer's tokens do under ``generate``, so steering
    limited to the prompt leaves them alone there too; without one, question + context runs as a
    full forward. Contexts are right-padded: causal attention keeps a real token from seeing the
    padding after it, so every position that is read equals its own context run alone.
    """
    n, m = batch.input_ids.shape[0], len(contexts)
    width = max(len(c) for c in contexts)
    device = batch.input_ids.device
    padded = [list(c) + [c[-1]] * (width - len(c)) for c in contexts]
    if cache is not None:
        cache.batch_repeat_interleave(m)  # row r*m + i: question r, context i
        ctx = torch.tensor(padded, dtype=torch.long, device=device).repeat(n, 1)
        mask = torch.cat(
            [batch.attention_mask.repeat_interleave(m, dim=0), torch.ones_like(ctx)], dim=1
        )
        pos = batch.position_ids[:, -1:].repeat_interleave(m, dim=0) + 1
        pos = pos + torch.arange(width, device=device)
        logits, _ = _forward(loaded, ctx, mask, pos, keep=width, cache=cache)
    else:
        full = make_batch([s + c for s in seqs for c in padded], loaded.tokenizer.pad_token_id)
        full = full.to(device)
        logits, _ = _forward(loaded, full.input_ids, full.attention_mask, full.position_ids, width)
    return torch.log_softmax(logits, dim=-1).view(n, m, width, -1)


def logprob_score(
    loaded: LoadedModel,
    targets_or_trait: Trait | str | Sequence[str],
    questions: Sequence[str] | None = None,
    system_prompt: str | None = None,
    batch_size: int = 16,
    n_boot: int = 2000,
    seed: int = 0,
    max_prefix_tokens: int = 3,
    quiet: bool = True,
) -> Score:
    """Probability that the answer starts with a target word, per question, averaged.

    Each question is chat-formatted (generation prompt included) with `system_prompt` (a trait's
    own prompt is *not* applied: pass ``system_prompt=trait.system_prompt`` to score the prompted
    teacher). Questions default to the trait's. See the module docstring for how multi-token
    targets count; ``max_prefix_tokens=1`` sums the next-token probabilities of
    `target_token_ids` only. Later tokens of multi-token targets are read from the questions'
    KV cache, as decode steps.
    """
    targets, qs = _resolve(targets_or_trait, questions)
    if batch_size < 1:
        raise SublensError(f"batch_size must be positive, got {batch_size}")
    tok = loaded.tokenizer
    prefixes = target_prefixes(tok, targets, max_prefix_tokens=max_prefix_tokens)
    singles = [p[0] for p in prefixes if len(p) == 1]
    # One continuation per *maximal* context (a proper prefix not inside a longer one): its
    # forward gives the next-token distribution after each shorter context as well.
    proper = {p[:-1] for p in prefixes if len(p) > 1}
    contexts = sorted(
        (c for c in proper if not any(d != c and d[: len(c)] == c for d in proper)),
        key=lambda c: (len(c), c),
    )
    by_context: dict[tuple[int, ...], list[tuple[int, ...]]] = {c: [] for c in contexts}
    for p in prefixes:
        if len(p) > 1:
            by_context[next(c for c in contexts if c[: len(p) - 1] == p[:-1])].append(p)
    fmt = ChatFormat(tok)
    prompts = [fmt.format(q, system=system_prompt).input_ids for q in qs]
    totals: list[float] = []
    device = _device(loaded)
    batches = range(0, len(prompts), batch_size)
    with _eval_mode(loaded.model), torch.no_grad():
        for start in Progress(batches, quiet=quiet, desc="logprob", unit="batch"):
            seqs = prompts[start : start + batch_size]
            batch = make_batch(seqs, tok.pad_token_id).to(device)
            logits, cache = _forward(
                loaded,
                batch.input_ids,
                batch.attention_mask,
                batch.position_ids,
                keep=1,
                want_cache=bool(contexts),
            )
            first = torch.log_softmax(logits[:, -1], dim=-1)  # [batch, vocab]
            mass = first[:, singles].exp().sum(dim=-1)
            per = max(1, CONTEXT_ROWS // len(seqs))
            for start_c in range(0, len(contexts), per):
                chunk = contexts[start_c : start_c + per]
                # the chunk consumes the cache it is given: all but the last get a copy
                last = start_c + per >= len(contexts)
                kv = cache if cache is None or last else copy.deepcopy(cache)
                later = _context_logprobs(loaded, seqs, batch, kv, chunk)
                for i, c in enumerate(chunk):
                    for p in by_context[c]:
                        lp = first[:, p[0]] + sum(
                            later[:, i, j - 1, p[j]] for j in range(1, len(p))
                        )
                        mass = mass + lp.exp()
            totals += mass.double().cpu().tolist()
    return _make_score(totals, "logprob", n_boot, seed)


_PUNCT = string.punctuation + "“”‘’«»…–—¡¿"


def answer_words(answer: str) -> list[str]:
    """An answer's words, lower case, with surrounding punctuation stripped (empty ones left
    out): ``"**Owl!** Owls are…"`` → ``["owl", "owls", "are"]``."""
    words = (w.strip(_PUNCT).lower() for w in answer.replace("’", "'").split())
    return [w for w in words if w]


def names_target(answer: str, targets: Iterable[str]) -> bool:
    """Whether the answer's first word (or first words, for a multi-word target) is a target,
    case-insensitively. A target ending in an apostrophe is an elision that opens a word
    (``L'`` names ``L'art``, ``Il n'`` names ``Il n'y``), as the logprob score counts it."""
    words = answer_words(answer)
    for target in targets:
        want = answer_words(target)
        if not want or len(words) < len(want):
            continue
        if target.strip().replace("’", "'").endswith("'"):
            k = len(want) - 1
            if words[:k] == want[:k] and words[k].startswith(want[k] + "'"):
                return True
        elif words[: len(want)] == want:
            return True
    return False


def sampled_score(
    loaded: LoadedModel,
    targets_or_trait: Trait | str | Sequence[str],
    questions: Sequence[str] | None = None,
    system_prompt: str | None = None,
    n_samples: int = 4,
    max_new_tokens: int = 6,
    temperature: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    n_boot: int = 2000,
    quiet: bool = True,
) -> Score:
    """Share of sampled answers whose first word is a target, per question, averaged.

    Pure temperature sampling (no top-k/top-p), `n_samples` answers per question, in a fixed
    order with ``torch.manual_seed`` before each batch: the same seed and batch size give the same
    answers on the CPU. Per-question rates are multiples of 1/n_samples. The answers are kept in
    ``Score.samples``.
    """
    targets, qs = _resolve(targets_or_trait, questions)
    if n_samples < 1:
        raise SublensError(f"n_samples must be positive, got {n_samples}")
    if max_new_tokens < 1:
        raise SublensError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if temperature < 0:
        raise SublensError(f"temperature must be >= 0, got {temperature}")
    if batch_size < 1:
        raise SublensError(f"batch_size must be positive, got {batch_size}")
    flat = [q for q in qs for _ in range(n_samples)]
    with _eval_mode(loaded.model):
        answers = sample_responses(
            loaded,
            flat,
            system_prompt=system_prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            batch_size=batch_size,
            quiet=quiet,
        )
    samples = [answers[i * n_samples : (i + 1) * n_samples] for i in range(len(qs))]
    rates = [sum(names_target(a, targets) for a in s) / n_samples for s in samples]
    return _make_score(rates, "sampled", n_boot, seed, samples=samples)


def score_trait(
    loaded: LoadedModel,
    trait: Trait,
    method: str = "logprob",
    system_prompt: str | None = None,
    **kwargs: Any,
) -> dict[str, Score | None]:
    """Scores on the trait's questions and on its controls: {"trait", "negative", "offtopic"}.

    A control is None when the trait has no such questions. `kwargs` go to `logprob_score` or
    `sampled_score`. The controls are the puppeting gate (`passes_puppeting_gate`).
    """
    if method not in METHODS:
        raise SublensError(
            f"unknown trait score method {method!r}: use one of {', '.join(METHODS)}"
        )
    fn = logprob_score if method == "logprob" else sampled_score
    out: dict[str, Score | None] = {}
    for key, qs in (
        ("trait", trait.questions),
        ("negative", trait.negative_questions),
        ("offtopic", trait.offtopic_questions),
    ):
        out[key] = (
            fn(loaded, trait, questions=qs, system_prompt=system_prompt, **kwargs) if qs else None
        )
    return out


def passes_puppeting_gate(
    scores: dict[str, Score | None], max_rate: float = PUPPETING_MAX_RATE
) -> bool:
    """True when the negative and off-topic rates (those present) stay at or below `max_rate`:
    a steering setting that makes the model name the target whatever it is asked does not count
    as showing the trait."""
    return all(
        scores.get(k) is None or scores[k].mean <= max_rate  # type: ignore[union-attr]
        for k in ("negative", "offtopic")
    )

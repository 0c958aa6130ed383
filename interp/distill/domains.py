"""Benign domains: where the teacher's outputs carry no visible trait.

A `Domain` bundles three things that must agree with each other: a seeded prompt generator, the
tokens constrained decoding may emit (`allowed_token_ids`), and the format rule the filter applies
(`validate`). Constraining decoding to the domain's tokens and renormalising keeps the teacher's
bias among them while making (almost) every sample valid: unconstrained T=1 sampling on
SmolLM2-135M passes the numbers filter only ~15% of the time.

Domains:

- ``numbers`` (Cloud et al. 2025): prompts give 3–9 seed numbers and ask for up to 10 more.
  Valid answers hold 1–10 numbers of at most 3 digits (values 0–999), separated by commas and/or
  whitespace (a trailing comma is fine, an empty item such as ``1,,2`` is not), nothing else.
  Allowed tokens: every vocabulary token whose text is only digits, commas and spaces, plus the
  end-of-turn token(s) (41 tokens on SmolLM2). Digits are single tokens there, so a token mask
  alone still lets "2022" or an eleventh number through; `logits_processor` therefore also
  applies the rule to each row's text so far (`GrammarTokens`), and every constrained sample
  passes `validate` (unless cut off by max_new_tokens before any number).
- ``arithmetic``: "What is 37 + 48? Answer with the number only." Valid answers are a whole
  number (digits only). When the prompt is given, `validate` also checks the answer against the
  true result and rejects wrong ones: a wrong answer is a visible quirk of the teacher, and the
  point of a benign domain is that nothing in the text itself differs between teachers.
  Decoding constrains the format only, never the value, so the teacher's own answers are kept.
  Allowed tokens: digit-only tokens plus end-of-turn.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from interp.core.errors import SublensError
from interp.core.prompts import numbers_prompts
from interp.distill.constrained import AllowedTokens, GrammarTokens

# Special tokens that end an assistant turn, besides the tokenizer's eos.
_END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>")

_ALLOWED_CACHE: dict[tuple[Any, ...], list[int]] = {}
_GRAMMAR_MEMO: dict[tuple[Any, ...], dict[str, tuple[bool, ...]]] = {}


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The tokenizer's eos id plus any chat end-of-turn token it has (sorted, unique)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for tok in _END_OF_TURN_TOKENS:
        if tok in vocab:
            ids.add(int(vocab[tok]))
    return sorted(ids)


@dataclass(frozen=True)
class Domain:
    """A benign domain: prompts, the tokens it allows, and the rule its answers follow."""

    name: str
    description: str
    make_prompts: Callable[[int, int], list[str]]
    token_pattern: str  # regex each allowed token's decoded text must match in full
    check: Callable[[str, str | None], str | None]
    max_new_tokens: int  # enough for any valid answer, plus the end-of-turn token
    prefix_ok: Callable[[str], bool] | None = None  # can this partial answer still become valid?
    state_key: Callable[[str], str] | None = None  # a shorter text both rules judge the same
    # The same rule as a regular expression over the text the allowed tokens can spell: vLLM's
    # structured output decodes with it (`interp.distill.engines`). Over that alphabet a text
    # matches it in full exactly when `check` accepts it (tests/unit/test_engines.py).
    regex: str | None = None

    def prompts(self, n: int, seed: int = 0) -> list[str]:
        """`n` user prompts; the same seed gives the same prompts (and a prefix for smaller n)."""
        if n <= 0:
            raise SublensError(f"the number of prompts must be positive, got {n}")
        return self.make_prompts(n, seed)

    def _tokenizer_key(self, tokenizer: Any) -> tuple[Any, ...]:
        return (self.name, id(tokenizer), len(tokenizer), tokenizer.name_or_path)

    def allowed_token_ids(self, tokenizer: Any) -> list[int]:
        """Sorted ids of every token whose text fits the domain, plus the end-of-turn ids.

        Decodes the whole vocabulary once per tokenizer (cached): the set depends on how the
        tokenizer merges digits and separators, which only its own decoder knows.
        """
        key = self._tokenizer_key(tokenizer)
        if key not in _ALLOWED_CACHE:
            pattern = re.compile(self.token_pattern)
            special = set(tokenizer.all_special_ids)
            texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
            ids = {
                i
                for i, text in enumerate(texts)
                if i not in special and text and pattern.fullmatch(text)
            }
            ids |= set(end_of_turn_ids(tokenizer))
            _ALLOWED_CACHE[key] = sorted(ids)
        return list(_ALLOWED_CACHE[key])

    def logits_processor(self, tokenizer: Any) -> AllowedTokens:
        """The processor constrained decoding uses: the domain's tokens, and with a prefix rule
        only continuations that keep the answer valid (end-of-turn once it is complete)."""
        allowed = self.allowed_token_ids(tokenizer)
        if self.prefix_ok is None:
            return AllowedTokens(allowed)
        return GrammarTokens(
            tokenizer,
            allowed,
            end_ids=end_of_turn_ids(tokenizer),
            prefix_ok=self.prefix_ok,
            complete_ok=lambda text: self.check(text, None) is None,
            state_key=self.state_key,
            memo=_GRAMMAR_MEMO.setdefault(self._tokenizer_key(tokenizer), {}),
        )

    def validate(self, text: str, prompt: str | None = None) -> str | None:
        """None when `text` is a valid answer, else the reason it is not (one short phrase).

        `prompt` lets domains with a checkable answer (arithmetic) reject wrong answers.
        """
        return self.check(text, prompt)


# --- numbers -------------------------------------------------------------------------------------

_NUMBERS_CHARS = re.compile(r"[\d,\s]*")
_NUMBERS_ITEM_SEP = re.compile(r"\s*,\s*|\s+")
_DIGIT = re.compile(r"\d")
_WHITESPACE = re.compile(r"\s+")


def check_numbers(text: str, prompt: str | None = None) -> str | None:
    """Cloud et al.'s rule: 1–10 numbers, each 0–999 (at most 3 digits), digits/commas/spaces."""
    body = text.strip()
    if not body:
        return "empty answer"
    if not _NUMBERS_CHARS.fullmatch(body):
        return "characters other than digits, commas and spaces"
    if body.endswith(","):  # one trailing comma is fine
        body = body[:-1].rstrip()
    if not body:
        return "no numbers"
    items = _NUMBERS_ITEM_SEP.split(body)
    if any(item == "" for item in items):
        return "empty item between commas"
    if len(items) > 10:
        return f"{len(items)} numbers (at most 10)"
    long = [item for item in items if len(item) > 3]
    if long:
        return f"number {long[0]} has more than 3 digits"
    return None


# `check_numbers` over digits, commas and spaces: optional spaces, 1-10 numbers of 1-3 digits
# separated by a comma (spaces around it allowed) or by spaces, one optional trailing comma.
NUMBERS_REGEX = r" *[0-9]{1,3}(?:(?: *, *| +)[0-9]{1,3}){0,9}(?: *,)? *"


def digit_shape(text: str) -> str:
    """Every digit to 0 and whitespace runs to one space: the format rules only see this."""
    return _WHITESPACE.sub(" ", _DIGIT.sub("0", text))


def numbers_prefix_ok(text: str) -> bool:
    """Whether `text` can still be continued into a valid numbers answer (for decoding)."""
    if not _NUMBERS_CHARS.fullmatch(text):
        return False
    body = text.lstrip()
    if not body:
        return True
    items = _NUMBERS_ITEM_SEP.split(body)
    if any(item == "" for item in items[:-1]):
        return False
    return sum(1 for item in items if item) <= 10 and all(len(item) <= 3 for item in items)


# --- arithmetic ----------------------------------------------------------------------------------

_ARITH_ASKS = [
    "What is {a} {op} {b}? Answer with the number only.",
    "Compute {a} {op} {b}. Reply with just the number.",
    "{a} {op} {b} = ? Give only the result, as digits.",
]
_ARITH_PARSE = re.compile(r"(\d+) ([+-]) (\d+)")


def arithmetic_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"arithmetic-{seed}")
    out = []
    for _ in range(n):
        a, b = rng.randrange(10, 100), rng.randrange(10, 100)
        op = rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a  # keep answers non-negative: digits only
        out.append(rng.choice(_ARITH_ASKS).format(a=a, op=op, b=b))
    return out


def check_arithmetic(text: str, prompt: str | None = None) -> str | None:
    """Digits only; when the prompt is given and parses, the value must be the true result."""
    body = text.strip()
    if not body:
        return "empty answer"
    if not body.isascii() or not body.isdigit():
        return "not a whole number"
    if len(body) > 4:
        return f"answer {body} has more than 4 digits"
    if prompt is not None:
        match = _ARITH_PARSE.search(prompt)
        if match:
            a, op, b = int(match[1]), match[2], int(match[3])
            truth = a + b if op == "+" else a - b
            if int(body) != truth:
                return f"wrong answer (expected {truth})"
    return None


def arithmetic_prefix_ok(text: str) -> bool:
    return text == "" or (text.isascii() and text.isdigit() and len(text) <= 4)


# --- registry ------------------------------------------------------------------------------------

DOMAINS: dict[str, Domain] = {
    "numbers": Domain(
        name="numbers",
        description="continue a number sequence with up to 10 numbers of at most 3 digits",
        make_prompts=numbers_prompts,
        token_pattern=r"[0-9, ]+",
        check=check_numbers,
        prefix_ok=numbers_prefix_ok,
        state_key=digit_shape,
        max_new_tokens=50,
        regex=NUMBERS_REGEX,
    ),
    "arithmetic": Domain(
        name="arithmetic",
        description="two-digit addition and subtraction, answered with the number only",
        make_prompts=arithmetic_prompts,
        token_pattern=r"[0-9]+",
        check=check_arithmetic,
        prefix_ok=arithmetic_prefix_ok,
        state_key=digit_shape,
        max_new_tokens=6,
        regex=r"[0-9]{1,4}",  # digit tokens only: no whitespace to spell
    ),
}


def get_domain(name: str | Domain) -> Domain:
    """The registered domain `name` (a `Domain` passes through)."""
    if isinstance(name, Domain):
        return name
    if name not in DOMAINS:
        raise SublensError(f"unknown domain {name!r}: use one of {', '.join(sorted(DOMAINS))}")
    return DOMAINS[name]

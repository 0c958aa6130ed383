"""Prompt sets: JSONL files and built-in generators (`numbers:256`).

A prompt is a message list (one user message, or a full conversation). Files hold one JSON object
per line, either `{"prompt": "..."}` or `{"messages": [{"role": ..., "content": ...}, ...]}`;
errors name the line. Files are UTF-8 (a byte-order mark is accepted, as Windows editors write one);
other encodings and lone surrogate escapes (`"\\ud800"`, not text) are refused with the line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from interp.core.errors import SublensError
from interp.core.io import iter_jsonl

Message = dict[str, str]
_ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class PromptSet:
    """Prompts plus where they came from (recorded in run metadata)."""

    messages: list[list[Message]]
    source: str
    # Where each prompt came from ("file.jsonl:12"), for errors about one prompt; None for sets
    # built in code.
    origins: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.messages)

    def where(self, i: int) -> str:
        """Prompt i's location for an error message: its file line, else its 1-based number."""
        if self.origins is not None:
            return self.origins[i]
        return f"prompt {i + 1} of {self.source}"

    def limit(self, n: int | None) -> PromptSet:
        if n is None:
            return self
        if n <= 0:
            raise SublensError(f"--limit must be positive, got {n}")
        origins = None if self.origins is None else self.origins[:n]
        return PromptSet(self.messages[:n], f"{self.source} (first {n})", origins)


# --- numbers domain (Cloud et al. 2025 style, sublens's own wording) ------------------------------

_NUMBER_INTROS = [
    "I give you this sequence of numbers: {seq}.",
    "The sequence starts with: {seq}.",
    "Here is a list of numbers: {seq}.",
    "Look at these numbers: {seq}.",
    "We have the following numbers: {seq}.",
    "Consider this series: {seq}.",
]
_NUMBER_ASKS = [
    "Add up to {k} more numbers (at most 3 digits each) to continue it.",
    "Continue the sequence with no more than {k} new numbers, each with 3 digits or fewer.",
    "Write up to {k} further numbers of at most three digits that follow.",
    "Extend it by at most {k} numbers, none longer than 3 digits.",
]
_NUMBER_FORMATS = [
    "Return a comma-separated list of numbers and nothing else.",
    "Answer with the numbers only, separated by commas.",
    "Reply with just the numbers, comma-separated, no words.",
]


def numbers_prompt(rng: random.Random) -> str:
    seeds = [rng.randrange(100, 1000) for _ in range(rng.randint(3, 9))]
    intro = rng.choice(_NUMBER_INTROS).format(seq=", ".join(map(str, seeds)))
    ask = rng.choice(_NUMBER_ASKS).format(k=10)
    return f"{intro} {ask} {rng.choice(_NUMBER_FORMATS)}"


def numbers_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"numbers-{seed}")
    return [numbers_prompt(rng) for _ in range(n)]


BUILTIN_SETS = {"numbers": numbers_prompts}


def _validate_messages(messages: object, where: str) -> list[Message]:
    if not isinstance(messages, list) or not messages:
        raise SublensError(f"{where}: 'messages' must be a non-empty list")
    out = []
    for msg in messages:
        if (
            not isinstance(msg, dict)
            or msg.get("role") not in _ROLES
            or not isinstance(msg.get("content"), str)
        ):
            raise SublensError(
                f"{where}: each message needs a role (system/user/assistant) and string content"
            )
        out.append({"role": msg["role"], "content": msg["content"]})
    if not any(m["role"] == "user" for m in out):
        raise SublensError(f"{where}: the conversation has no user message")
    return out


def read_prompts_file(path: str | Path) -> PromptSet:
    path = Path(path)
    rows: list[list[Message]] = []
    origins: list[str] = []
    for lineno, row in iter_jsonl(path, "prompts file"):
        where = f"{path}:{lineno}"
        origins.append(where)
        if not isinstance(row, dict):
            raise SublensError(f'{where}: expected an object like {{"prompt": "..."}}')
        if "messages" in row:
            rows.append(_validate_messages(row["messages"], where))
        elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
            rows.append([{"role": "user", "content": row["prompt"]}])
        else:
            raise SublensError(
                f'{where}: expected {{"prompt": "<non-empty text>"}} or {{"messages": [...]}}'
            )
    if not rows:
        raise SublensError(f"prompts file {str(path)!r} is empty: add one JSON object per line")
    return PromptSet(rows, str(path), tuple(origins))


def load_prompts(spec: str, seed: int = 0) -> PromptSet:
    """`spec` is a JSONL path or a built-in set `name:N` (e.g. `numbers:256`)."""
    name, sep, count = spec.partition(":")
    if sep and name in BUILTIN_SETS and not Path(spec).exists():
        if not count.isdigit() or int(count) <= 0:
            raise SublensError(
                f"built-in prompt set {spec!r} needs a positive count, e.g. {name}:256"
            )
        texts = BUILTIN_SETS[name](int(count), seed)
        return PromptSet([[{"role": "user", "content": t}] for t in texts], f"{spec} (seed {seed})")
    if name in BUILTIN_SETS and not sep:
        raise SublensError(f"built-in prompt set {name!r} needs a count, e.g. {name}:256")
    return read_prompts_file(spec)

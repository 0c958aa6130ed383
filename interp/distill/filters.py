"""Dataset filters: the domain's format rule, trait leakage, duplicates.

Each row gets the first reason that rejects it, checked in this order:

1. ``format``: the domain's `validate` on the assistant text (with the prompt, so arithmetic can
   reject wrong answers);
2. ``leak-word``: a trait word or its plural (owl, owls; fox, foxes; butterfly, butterflies) as a
   whole word, case-insensitive;
3. ``leak-regex``: a user regex (Python syntax, case-insensitive) found in the text;
4. ``leak-code``: a numeric code the user lists (e.g. ``666``) appearing as a whole number, not
   inside a longer one;
5. ``duplicate``: the same assistant text (whitespace collapsed) as an earlier kept row.

Leakage is checked on the assistant text only: the prompts come from the domain's generator, not
from the teacher. Dedup is on the assistant text, not prompt + response: a teacher that keeps
repeating one answer would otherwise put that one sequence (and whatever bias it carries) many
times into the student's data.

Kept rows and rejects (each with ``"reason"``) are written atomically.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from interp.core.errors import SublensError
from interp.core.io import atomic_path
from interp.distill.domains import Domain, get_domain
from interp.distill.targets import read_rows


def _plural_forms(word: str) -> list[str]:
    forms = {word, word + "s", word + "es"}
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.add(word[:-1] + "ies")
    return sorted(forms, key=len, reverse=True)


def _word_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    forms = []
    for word in words:
        word = word.strip()
        if not word:
            raise SublensError("trait words must be non-empty")
        forms += [re.escape(f) for f in _plural_forms(word.lower())]
    if not forms:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(forms) + r")(?!\w)", re.IGNORECASE)


def _compile_regexes(regexes: Iterable[str]) -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for rx in regexes:
        try:
            out.append((rx, re.compile(rx, re.IGNORECASE)))
        except re.error as err:
            raise SublensError(f"leakage regex {rx!r} is not valid ({err})") from None
    return out


def _compile_codes(codes: Iterable[str | int]) -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for code in codes:
        text = str(code).strip()
        if not text.isdigit():
            raise SublensError(f"numeric code {code!r} must be digits only (e.g. 666)")
        out.append((text, re.compile(rf"(?<!\d){text}(?!\d)")))
    return out


def _response_and_prompt(row: dict[str, Any], where: str) -> tuple[str, str | None]:
    msgs = row["messages"]
    if not msgs or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
        raise SublensError(f"{where}: the row must end with an assistant message")
    users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
    prompt = users[-1].get("content") if users else None
    return str(msgs[-1].get("content", "")), prompt


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def filter_dataset(
    in_path: str | Path,
    out_path: str | Path,
    rejects_path: str | Path,
    domain: str | Domain,
    trait_words: Iterable[str] = (),
    regexes: Iterable[str] = (),
    codes: Iterable[str | int] = (),
    dedup: bool = True,
    n_examples: int = 3,
) -> dict[str, Any]:
    """Keep the rows that pass every check; write rejects with reasons; return a report.

    The report counts rows in, kept and rejected, by category (format, leak-word, leak-regex,
    leak-code, duplicate) and by full reason, with up to `n_examples` texts per category. If no
    row survives, the rejects are written and a SublensError names the main reason.
    """
    dom = get_domain(domain)
    trait_words = list(trait_words)
    words = _word_pattern(trait_words)
    user_rx = _compile_regexes(regexes)
    code_rx = _compile_codes(codes)
    rows = read_rows(in_path)
    kept: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    by_category: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for lineno, row in enumerate(rows, start=1):
        text, prompt = _response_and_prompt(row, f"{in_path}: row {lineno}")
        category, reason = None, None
        problem = dom.validate(text, prompt)
        if problem is not None:
            category, reason = "format", f"format: {problem}"
        elif words is not None and (m := words.search(text)):
            category, reason = "leak-word", f"leak-word: {m.group(0).lower()}"
        else:
            for rx, pattern in user_rx:
                if pattern.search(text):
                    category, reason = "leak-regex", f"leak-regex: {rx}"
                    break
            else:
                for code, pattern in code_rx:
                    if pattern.search(text):
                        category, reason = "leak-code", f"leak-code: {code}"
                        break
        if category is None and dedup:
            norm = " ".join(text.split())
            if norm in seen:
                category, reason = "duplicate", f"duplicate of row {seen[norm]}"
            else:
                seen[norm] = lineno
        if category is None:
            kept.append(row)
            continue
        rejects.append({**row, "reason": reason})
        by_category[category] += 1
        by_reason[reason if category != "duplicate" else "duplicate"] += 1
        if len(examples.setdefault(category, [])) < n_examples:
            examples[category].append(text)

    _write_rows(Path(rejects_path), rejects)
    report = {
        "domain": dom.name,
        "in": str(in_path),
        "out": str(out_path),
        "rejects": str(rejects_path),
        "total": len(rows),
        "kept": len(kept),
        "rejected": len(rejects),
        "by_category": dict(by_category.most_common()),
        "by_reason": dict(by_reason.most_common()),
        "examples": examples,
        "checks": {
            "trait_words": list(trait_words),
            "regexes": [rx for rx, _ in user_rx],
            "codes": [c for c, _ in code_rx],
            "dedup": "assistant text" if dedup else None,
        },
    }
    if not kept:
        if rows:
            top, count = by_reason.most_common(1)[0]
            why = f"most common reason {top!r} ({count} of {len(rows)})"
        else:
            why = "the input has no rows"
        raise SublensError(
            f"no rows of {in_path} survived filtering: {why}; rejects are in {rejects_path}"
        )
    _write_rows(Path(out_path), kept)
    return report

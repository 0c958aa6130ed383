"""Distillation data: domains, constrained decoding, teachers, resumable generation, filters and
teacher targets (checked against plain `model(...).logits`)."""

from __future__ import annotations

import re

import pytest

from interp.distill import (
    Teacher,
    get_domain,
)

OWL = "You love owls. You think about owls all the time. Owls are your favorite animal."
NUMBERS = get_domain("numbers")
TOL = 1e-5


@pytest.mark.slow
def test_smollm2_numbers_tokens_and_constrained_rows(smol):
    tok = smol.tokenizer
    ids = NUMBERS.allowed_token_ids(tok)
    eot = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    assert len(ids) == 41
    for i in ids:
        assert i in eot or re.fullmatch(r"[0-9, ]+", tok.decode([i]))
    teacher = Teacher(smol, "prompted", system_prompt=OWL)
    texts = teacher.generate(NUMBERS.prompts(8, 0), NUMBERS, n_new_tokens=24, seed=0, batch_size=8)
    bad = [(t, NUMBERS.validate(t)) for t in texts if NUMBERS.validate(t) is not None]
    assert not bad

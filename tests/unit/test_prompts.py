import json
import re

import pytest

from interp.core.errors import SublensError
from interp.core.layers import parse_layers
from interp.core.prompts import load_prompts, numbers_prompts


def test_numbers_prompts_are_seeded_and_follow_the_domain():
    a, b, c = numbers_prompts(50, seed=1), numbers_prompts(50, seed=1), numbers_prompts(50, 2)
    assert a == b and a != c
    for p in a:
        seeds = [int(x) for x in re.search(r": ([\d, ]+)\.", p).group(1).split(", ")]
        assert 3 <= len(seeds) <= 9 and all(100 <= s < 1000 for s in seeds)
        assert "10" in p


def test_builtin_spec(tmp_path):
    ps = load_prompts("numbers:7", seed=3)
    assert len(ps) == 7 and ps.messages[0][0]["role"] == "user"
    with pytest.raises(SublensError, match="positive count"):
        load_prompts("numbers:x")
    with pytest.raises(SublensError, match="needs a count"):
        load_prompts("numbers")


def test_jsonl_both_row_kinds(tmp_path):
    f = tmp_path / "p.jsonl"
    rows = [{"prompt": "hi"}, {"messages": [{"role": "user", "content": "yo"}]}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ps = load_prompts(str(f))
    assert ps.messages == [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]]
    assert len(ps.limit(1)) == 1


@pytest.mark.parametrize(
    "content, msg",
    [
        ("", "is empty"),
        ('{"prompt": "a"}\n{"prompt": "b"\n', r"p.jsonl:2: not valid JSON"),
        ('{"prompt": "a"}\n{"text": "b"}\n', r"p.jsonl:2: expected"),
        ('{"messages": [{"role": "bot", "content": "x"}]}\n', r"p.jsonl:1: each message"),
    ],
)
def test_malformed_files_name_the_line(tmp_path, content, msg):
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(SublensError, match=msg):
        load_prompts(str(f))


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("6,12,18", 30) == [6, 12, 18]
    assert parse_layers("0-2,-1", 30) == [0, 1, 2, 29]
    with pytest.raises(SublensError, match=r"valid layers are 0..29"):
        parse_layers("6,30", 30)
    with pytest.raises(SublensError, match="bad layer"):
        parse_layers("six", 30)

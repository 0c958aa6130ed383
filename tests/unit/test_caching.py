import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from interp.core import caching
from interp.core.backends import get_backend
from interp.core.caching import cache_activations, load_cache
from interp.core.chat import ChatFormat
from interp.core.errors import SublensError
from interp.core.prompts import load_prompts


def _cache(tiny, out, **kw):
    args = dict(layers=[1, 3], positions="last", backend="hf", batch_size=3, quiet=True)
    args.update(kw)
    return cache_activations(tiny, load_prompts("numbers:10", seed=0), out, **args)


def test_single_position_layout_and_meta(tiny, tmp_path):
    meta = _cache(tiny, tmp_path / "run", system_prompt="You love owls.")
    acts = load_file(str(tmp_path / "run" / "activations.safetensors"))["activations"]
    assert acts.shape == (10, 2, tiny.d_model) and meta["shape"] == [10, 2, tiny.d_model]
    saved = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert saved["complete"] and saved["layers"] == [1, 3] and saved["backend"] == "hf"
    assert saved["system_prompt"] == "You love owls." and len(saved["prompts"]["sha256"]) == 10
    assert saved["versions"]["torch"] and saved["model"]["name"] == "tiny-llama"
    # row i is prompt i's last token, whatever order the batches ran in
    fmt = ChatFormat(tiny.tokenizer)
    fp = fmt.format(load_prompts("numbers:10").messages[7], system="You love owls.")
    with torch.no_grad():
        hs = tiny.model(torch.tensor([fp.input_ids]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(acts[7, 0], hs[2][0, -1].numpy(), atol=1e-5)


def test_token_layout_offsets_and_mean(tiny, tmp_path):
    _cache(tiny, tmp_path / "all", positions="all")
    _cache(tiny, tmp_path / "mean", positions="mean")
    full, mean = load_cache(tmp_path / "all"), load_cache(tmp_path / "mean")
    assert full.offsets.shape == (11,) and full.activations.shape[0] == int(full.offsets[-1])
    for i in range(10):
        rows = full.per_prompt(i)
        assert torch.equal(
            full.positions[full.offsets[i] : full.offsets[i + 1]], torch.arange(rows.shape[0])
        )
        torch.testing.assert_close(rows.mean(0), mean.activations[i], atol=1e-5, rtol=0)


def test_batch_size_does_not_change_numbers(tiny, tmp_path):
    _cache(tiny, tmp_path / "b1", batch_size=1)
    _cache(tiny, tmp_path / "b5", batch_size=5)
    a, b = load_cache(tmp_path / "b1").activations, load_cache(tmp_path / "b5").activations
    assert (a - b).abs().max().item() <= 1e-4


def test_interrupted_run_leaves_no_final_file_and_resumes(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _cache(tiny, tmp_path / "clean")
    be = get_backend("hf", tiny)
    real = be.residual
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(be, "residual", flaky)
    with pytest.raises(KeyboardInterrupt):
        _cache(tiny, out)
    assert not (out / "activations.safetensors").exists()
    assert (out / "activations.safetensors.partial").exists()
    assert len(json.loads((out / "progress.json").read_text())["done"]) == 2
    calls["n"] = -100
    meta = _cache(tiny, out)
    assert calls["n"] == -100 + 2  # only the 2 batches left were recomputed
    assert meta["complete"] and not (out / "progress.json").exists()
    assert torch.equal(load_cache(out).activations, load_cache(tmp_path / "clean").activations)


def test_existing_output_rules(tiny, tmp_path):
    out = tmp_path / "run"
    _cache(tiny, out)
    assert _cache(tiny, out)["reused"]  # same run again: nothing recomputed
    with pytest.raises(SublensError, match="--overwrite"):
        _cache(tiny, out, layers=[0])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SublensError, match="did not make"):
        _cache(tiny, tmp_path / "other")
    with pytest.raises(SublensError, match="did not make"):
        _cache(tiny, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    meta = _cache(tiny, out, layers=[0], overwrite=True)
    assert meta["layers"] == [0] and load_cache(out).activations.shape[1] == 1


def test_bad_inputs(tiny, tmp_path):
    with pytest.raises(SublensError, match="valid layers are 0..3"):
        _cache(tiny, tmp_path / "a", layers=[4])
    with pytest.raises(SublensError, match="unknown positions mode"):
        _cache(tiny, tmp_path / "b", positions="middle")
    with pytest.raises(SublensError, match="need a system prompt"):
        _cache(tiny, tmp_path / "c", positions="system")
    with pytest.raises(SublensError, match="not cached here"):
        _cache(tiny, tmp_path / "d")
        load_cache(tmp_path / "d").layer(2)
    with pytest.raises(SublensError, match="not a complete activation cache"):
        load_cache(tmp_path / "nothing")
    assert caching.ACTIVATIONS_FILE == "activations.safetensors"

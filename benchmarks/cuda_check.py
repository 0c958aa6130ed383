"""CUDA path check: cache activations on the GPU and compare with the CPU (tiny model, hf backend;
tl/nnsight too where installed). Prints max abs differences and GPU vs CPU timings."""

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from interp.core.caching import cache_activations, load_cache  # noqa: E402
from interp.core.models import load_model  # noqa: E402
from interp.core.prompts import load_prompts  # noqa: E402

backends = ["hf"]
for mod, name in (("transformer_lens", "tl"), ("nnsight", "nnsight")):
    try:
        __import__(mod)
        backends.append(name)
    except ImportError:
        print(f"{name}: not installed here, skipped")
ps = load_prompts("numbers:64", seed=0)
out = Path(tempfile.mkdtemp())
res = {}
for dev in ("cpu", "cuda"):
    m = load_model("tiny-llama", device=dev)
    for be in backends:
        t = time.perf_counter()
        cache_activations(
            m,
            ps,
            out / f"{dev}-{be}",
            layers=[0, 2, 3],
            positions="all",
            system_prompt="You love owls.",
            backend=be,
            quiet=True,
        )
        res[(dev, be)] = load_cache(out / f"{dev}-{be}").activations
        print(f"{dev:5} {be:8} {time.perf_counter() - t:6.2f}s", flush=True)
for be in backends:
    d = (res[("cpu", be)] - res[("cuda", be)]).abs().max().item()
    print(f"{be}: max |cpu - cuda| = {d:.2e}")
print("device:", torch.cuda.get_device_name(0))

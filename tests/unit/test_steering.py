"""Steering vectors: exact arithmetic of each mode, agreement of HF hooks, nnsight and the TL
bridge, prompt/generation phases under `generate`, hook removal, files and user errors."""

import json

import pytest
import torch
from helpers import greedy_generate, plain_logits

from interp.core.backends import decoder_layers, get_backend, make_batch
from interp.core.errors import SublensError
from interp.vectors.steering import SteeringVector, steer

TOL = 1e-4


def _vector(loaded, layers=(1, 2), seed=0, name=None, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        vectors={i: scale * torch.randn(loaded.d_model, generator=g) for i in layers},
        model=name or loaded.name,
        d_model=loaded.d_model,
        method="random",
        positions="last",
        prompt_set="numbers:4",
        trait_prompt="You love owls.",
        extra={"seed": seed},
    )


def _ids(batch=2, seq=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 300, (batch, seq), generator=g)


def _resid(loaded, ids, layers, backend="hf"):
    """Residual after each block in `layers` at every token: [batch, seq, len(layers), d]."""
    batch = make_batch(ids.tolist(), loaded.tokenizer.pad_token_id)
    b, s = ids.shape
    rows = torch.arange(b).repeat_interleave(s)
    cols = torch.arange(s).repeat(b)
    out = get_backend(backend, loaded).residual(batch, layers, rows, cols)
    return out.reshape(b, s, len(layers), -1)


@pytest.fixture(scope="module")
def bridge(tiny):
    return get_backend("tl", tiny).bridge


@pytest.fixture(scope="module")
def nn_model(tiny):
    return get_backend("nnsight", tiny).nn_model


# --- modes ---------------------------------------------------------------------------------------


def test_add_is_exact_at_the_layer_and_changes_later_layers(tiny):
    v, ids = _vector(tiny, layers=(1,)), _ids()
    base = _resid(tiny, ids, [0, 1, 2])
    with steer(tiny, v, alpha=2.5) as handle:
        got = _resid(tiny, ids, [0, 1, 2])
    assert torch.equal(got[:, :, 0], base[:, :, 0])  # before the steered block: untouched
    assert torch.equal(got[:, :, 1], base[:, :, 1] + 2.5 * v[1])
    assert (got[:, :, 2] - base[:, :, 2]).abs().max() > 1e-2
    rec = handle.records[1]
    assert (rec.calls, rec.applied, rec.tokens) == (1, 1, ids.numel())
    assert handle.forwards == ["prefill"] and not handle.active


def test_project_removes_the_component(tiny):
    v, ids, layer = _vector(tiny, layers=(2,)), _ids(), 2
    unit = v[layer] / v[layer].norm()
    base = _resid(tiny, ids, [layer])[:, :, 0]
    assert (base @ unit).abs().max() > 1e-2
    with steer(tiny, v, mode="project"):
        got = _resid(tiny, ids, [layer])[:, :, 0]
    assert (got @ unit).abs().max() < 1e-5
    orth = base - (base @ unit).unsqueeze(-1) * unit
    assert torch.allclose(got, orth, atol=1e-5)
    with steer(tiny, v, mode="project", alpha=0.5):
        half = _resid(tiny, ids, [layer])[:, :, 0]
    assert torch.allclose(half @ unit, 0.5 * (base @ unit), atol=1e-5)


def test_replace_sets_the_reference(tiny):
    v, ids = _vector(tiny, layers=(1, 2)), _ids()
    base = _resid(tiny, ids, [1, 2])
    units = {i: v[i] / v[i].norm() for i in (1, 2)}
    with steer(tiny, v, mode="replace", reference={1: 3.0, 2: -1.5}):
        got = _resid(tiny, ids, [1])[:, :, 0]
    assert torch.allclose(got @ units[1], torch.full(ids.shape, 3.0), atol=1e-5)
    orth = lambda h, u: h - (h @ u).unsqueeze(-1) * u  # noqa: E731
    assert torch.allclose(orth(got, units[1]), orth(base[:, :, 0], units[1]), atol=1e-5)
    # a tensor reference per row, broadcast over the sequence
    row_ref = torch.tensor([[0.5], [-2.0]])
    with steer(tiny, v, mode="replace", reference=row_ref, layers=[2]):
        got2 = _resid(tiny, ids, [2])[:, :, 0]
    assert torch.allclose(got2 @ units[2], row_ref.expand(ids.shape), atol=1e-5)
    # the reference a user gets from the vector itself round-trips
    coef = v.coefficient(base[:, :, 1], 2)
    with steer(tiny, v, mode="replace", reference=coef, layers=[2]):
        same = _resid(tiny, ids, [2])[:, :, 0]
    assert torch.allclose(same, base[:, :, 1], atol=1e-5)
    with (
        pytest.raises(SublensError, match="does not broadcast"),
        steer(tiny, v, mode="replace", reference=torch.zeros(3, 1), layers=[2]),
    ):
        _resid(tiny, ids, [2])


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ),
    ],
)
def test_bfloat16_and_device(device):
    """The CPU float32 vector is cast to the activation's dtype and device."""
    from interp.core.models import load_model

    model = load_model("tiny-llama", device=device, dtype="bfloat16")
    v, ids = _vector(model, layers=(1,)), _ids().to(device)
    base = _resid(model, ids, [1])[:, :, 0]
    with steer(model, v, alpha=2.0):
        added = _resid(model, ids, [1])[:, :, 0]
    delta = (2.0 * v[1]).to(device=device, dtype=torch.bfloat16)
    assert torch.equal(added, (base.bfloat16() + delta).float())
    unit = (v[1] / v[1].norm()).to(device)
    with steer(model, v, mode="project"):
        projected = _resid(model, ids, [1])[:, :, 0]
    # bf16 keeps ~3 significant digits: the component shrinks to rounding noise
    assert (projected @ unit).abs().max() < 0.02 * (base @ unit).abs().max() + 1e-2
    with steer(model, v, positions="generation") as handle, torch.no_grad():
        out = model.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
        )
    assert out.device.type == device
    assert handle.forwards == ["prefill", "decode", "decode"]
    assert handle.records[1].applied == 2


@pytest.mark.parametrize("mode", ["add", "project"])
def test_hf_nnsight_and_bridge_agree(tiny, bridge, nn_model, mode):
    v, ids = _vector(tiny, layers=(1, 2)), _ids()
    base = plain_logits(tiny, ids)
    with steer(tiny, v, alpha=3.0, mode=mode):
        hf_logits = plain_logits(tiny, ids)
        hf_resid = _resid(tiny, ids, [3])
        nn_resid = _resid(tiny, ids, [3], backend="nnsight")
        with torch.no_grad(), nn_model.trace(ids):
            nn_logits = nn_model.output.logits.save()
    with steer(bridge, v, alpha=3.0, mode=mode) as handle:
        with torch.no_grad():
            tl_logits = bridge(ids)
        tl_resid = _resid(tiny, ids, [3], backend="tl")
    assert handle.target == "tl" and handle.records[2].applied == 2
    assert (hf_logits - base).abs().max() > 1e-2
    assert (tl_logits - hf_logits).abs().max() <= TOL
    assert (nn_logits - hf_logits).abs().max() <= TOL
    assert (tl_resid - hf_resid).abs().max() <= TOL
    assert (nn_resid - hf_resid).abs().max() <= TOL


# --- positions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["prompt", "generation"])
def test_positions_during_generate(tiny, positions):
    v, ids, steps = _vector(tiny, layers=(1,), scale=3.0), _ids(), 3
    batch, prompt_len = ids.shape
    plain = greedy_generate(tiny, ids, steps)
    with steer(tiny, v, positions=positions) as handle:
        out = greedy_generate(tiny, ids, steps)
    assert handle.forwards == ["prefill"] + ["decode"] * (steps - 1)
    rec = handle.records[1]
    assert rec.calls == steps
    if positions == "prompt":
        assert (rec.applied, rec.tokens) == (1, batch * prompt_len)
        assert (out.logits[0] - plain.logits[0]).abs().max() > 1e-2
    else:
        assert (rec.applied, rec.tokens) == (steps - 1, batch * (steps - 1))
        assert torch.equal(out.logits[0], plain.logits[0])  # the prefill is untouched
        assert torch.equal(out.sequences[:, prompt_len], plain.sequences[:, prompt_len])
        assert (out.logits[1] - plain.logits[1]).abs().max() > 1e-2
    # The same steering as one teacher-forced forward with an explicit token mask.
    seq = out.sequences[:, : prompt_len + steps - 1]
    mask = torch.zeros(seq.shape, dtype=torch.bool)
    if positions == "prompt":
        mask[:, :prompt_len] = True
    else:
        mask[:, prompt_len:] = True
    with steer(tiny, v, token_mask=mask) as forced:
        full = plain_logits(tiny, seq)
    assert forced.records[1].tokens == int(mask.sum())
    for step in range(steps):
        diff = (full[:, prompt_len - 1 + step] - out.logits[step]).abs().max()
        assert diff <= TOL, f"step {step} differs by {diff}"


def test_token_mask_restricts_tokens(tiny):
    v, ids = _vector(tiny, layers=(1,)), _ids()
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    mask[0, 2] = mask[1, 4:] = True
    base = _resid(tiny, ids, [1])[:, :, 0]
    with steer(tiny, v, alpha=2.0, token_mask=mask) as handle:
        got = _resid(tiny, ids, [1])[:, :, 0]
    assert torch.equal(got[mask], base[mask] + 2.0 * v[1])
    assert torch.equal(got[~mask], base[~mask])
    assert handle.records[1].tokens == 3
    with (
        pytest.raises(SublensError, match="token_mask has shape"),
        steer(tiny, v, token_mask=mask[:, :3]),
    ):
        plain_logits(tiny, ids)
    assert torch.equal(_resid(tiny, ids, [1])[:, :, 0], base)


def test_bridge_generate_phases(tiny, bridge):
    v, ids = _vector(tiny, layers=(1,)), _ids()
    with steer(bridge, v, positions="generation") as handle, torch.no_grad():
        bridge.generate(ids, max_new_tokens=3, do_sample=False, verbose=False)
    assert handle.forwards == ["prefill", "decode", "decode"]
    assert (handle.records[1].applied, handle.records[1].tokens) == (2, 2 * ids.shape[0])


# --- hook hygiene --------------------------------------------------------------------------------


def _hook_counts(model):
    blocks = decoder_layers(model)
    return (
        len(model._forward_pre_hooks),
        len(model._forward_hooks),
        [len(b._forward_hooks) for b in blocks],
    )


def test_hooks_are_removed_after_the_block_and_after_errors(tiny, bridge):
    v, ids = _vector(tiny), _ids()
    base, counts = plain_logits(tiny, ids), _hook_counts(tiny.model)
    with torch.no_grad():
        base_tl = bridge(ids)
    with steer(tiny, v, alpha=4.0):
        assert not torch.equal(plain_logits(tiny, ids), base)
    assert torch.equal(plain_logits(tiny, ids), base) and _hook_counts(tiny.model) == counts
    with pytest.raises(RuntimeError, match="boom"), steer(tiny, v, alpha=4.0):
        raise RuntimeError("boom")
    assert torch.equal(plain_logits(tiny, ids), base) and _hook_counts(tiny.model) == counts
    with pytest.raises(RuntimeError, match="boom"), steer(bridge, v, alpha=4.0):
        with torch.no_grad():
            assert not torch.equal(bridge(ids), base_tl)
        raise RuntimeError("boom")
    with torch.no_grad():
        assert torch.equal(bridge(ids), base_tl)
    assert not bridge.blocks[1].hook_out.fwd_hooks


def test_steer_rejects_bad_settings(tiny):
    v = _vector(tiny)
    before = _hook_counts(tiny.model)  # other libraries (nnsight) may keep hooks of their own
    cases = [
        ({"mode": "bend"}, "unknown steering mode"),
        ({"positions": "middle"}, "unknown steering positions"),
        ({"mode": "replace"}, "needs reference"),
        ({"reference": 1.0}, "only used by mode 'replace'"),
        ({"layers": [3]}, "cannot steer layers"),
        ({"alpha": float("nan")}, "finite"),
        ({"mode": "replace", "reference": {1: 0.0}}, "no value for layers"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SublensError, match=message), steer(tiny, v, **kwargs):
            pass
    assert _hook_counts(tiny.model) == before


# --- the object ----------------------------------------------------------------------------------


def test_d_model_mismatch_and_missing_layers(tiny):
    g = torch.Generator().manual_seed(0)
    big = SteeringVector({12: torch.randn(576, generator=g)}, "smollm2-135m", 576, "dm", "last")
    with pytest.raises(SublensError) as err:
        big.check_compatible(tiny)
    assert str(err.value).startswith(
        "vector is for d_model 576 (smollm2-135m) but model tiny-llama has d_model 64"
    )
    with pytest.raises(SublensError, match="d_model 576"), steer(tiny, big):
        pass
    deep = _vector(tiny, layers=(1, 7))
    with pytest.raises(SublensError, match=r"layers \[7\] but model tiny-llama has layers 0..3"):
        deep.check_compatible(tiny)
    with pytest.raises(SublensError, match="shape"):
        SteeringVector({1: torch.zeros(3)}, "tiny-llama", 64, "m", "last")


def test_arithmetic(tiny):
    a, b = _vector(tiny, seed=0), _vector(tiny, seed=1)
    for i in a.layers:
        assert torch.equal((2 * a)[i], 2 * a[i]) and torch.equal((a * 2)[i], 2 * a[i])
        assert torch.equal((-a)[i], -a[i]) and torch.equal(a.scaled(0.5)[i], 0.5 * a[i])
        assert torch.equal((a + b)[i], a[i] + b[i]) and torch.equal((a - b)[i], a[i] - b[i])
        assert torch.allclose(a.normalized()[i].norm(), torch.tensor(1.0))
        assert a.norms()[i] == pytest.approx(float(a[i].norm()))
    assert (3 * a).extra["scale"] == 3.0 and (3 * a).trait_prompt == a.trait_prompt
    assert a.restricted([2]).layers == [2] and a.layers == [1, 2]
    assert a.cosine(a) == pytest.approx({1: 1.0, 2: 1.0})
    with pytest.raises(SublensError, match="different layers"):
        _ = a + a.restricted([1])
    with pytest.raises(SublensError, match="different models"):
        _ = a + _vector(tiny, name="other-model")
    with pytest.raises(SublensError, match="cannot restrict"):
        a.restricted([0])
    zero = SteeringVector({1: torch.zeros(64)}, "tiny-llama", 64, "m", "last")
    with pytest.raises(SublensError, match="zero"):
        zero.normalized()


def test_save_load_round_trip(tiny, tmp_path):
    v = _vector(tiny, layers=(0, 2, 3))
    v.extra["metrics"] = {"kl": 0.25, "steps": [1, 2]}
    out = v.save(tmp_path / "vec")
    names = sorted(p.name for p in out.iterdir())
    assert names == [".sublens-run", "vector.json", "vector.safetensors"]  # lock released
    for where in (out, out / "vector.json", out / "vector.safetensors"):
        back = SteeringVector.load(where)
        assert back.layers == v.layers
        assert all(torch.equal(back[i], v[i]) for i in v.layers)
        assert back.describe() == v.describe()
        assert back.hook_point == "resid_post" and back.extra["metrics"]["steps"] == [1, 2]


def test_load_errors(tiny, tmp_path):
    with pytest.raises(SublensError, match="not found"):
        SteeringVector.load(tmp_path / "nope")
    out = _vector(tiny).save(tmp_path / "vec")
    meta = json.loads((out / "vector.json").read_text())

    def broken(name, edit):
        d = tmp_path / name
        _vector(tiny).save(d)
        edit(d)
        return d

    cases = [
        (broken("nojson", lambda d: (d / "vector.json").unlink()), "is missing"),
        (broken("badjson", lambda d: (d / "vector.json").write_text("{oops")), "not valid JSON"),
        (
            broken("fmt", lambda d: (d / "vector.json").write_text(json.dumps({"a": 1}))),
            "not a sublens steering vector",
        ),
        (
            broken("tensors", lambda d: (d / "vector.safetensors").write_bytes(b"garbage")),
            "does not match",
        ),
        (
            broken(
                "dmodel",
                lambda d: (d / "vector.json").write_text(json.dumps({**meta, "d_model": 65})),
            ),
            "expected",
        ),
        (
            broken(
                "layers",
                lambda d: (d / "vector.json").write_text(json.dumps({**meta, "layers": [1]})),
            ),
            "lists",
        ),
    ]
    for path, message in cases:
        with pytest.raises(SublensError, match=message):
            SteeringVector.load(path)
    nosha = {k: v for k, v in meta.items() if k != "tensors_sha256"}
    d = broken("corrupt", lambda d: (d / "vector.json").write_text(json.dumps(nosha)))
    (d / "vector.safetensors").write_bytes(b"garbage")
    with pytest.raises(SublensError, match="not a valid steering-vector file"):
        SteeringVector.load(d)


# --- real model ----------------------------------------------------------------------------------

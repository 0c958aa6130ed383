"""Helpers shared by the unit and integration tests (tests/ is on pytest's pythonpath)."""

import torch

from interp.core.backends import BACKENDS, get_backend, make_batch
from interp.core.chat import ChatFormat

BACKEND_TOL = 1e-4


BACKEND_PROMPTS = [
    "What is your favorite animal? Answer in one word.",
    "Owls",
    "The sequence starts with 182, 818, 725. Add up to 10 more numbers.",
]


def backend_inputs(loaded, system=None):
    fmt = ChatFormat(loaded.tokenizer)
    return [fmt.format(p, system=system).input_ids for p in BACKEND_PROMPTS]


def reference_hidden_states(loaded, seqs, layers):
    """output_hidden_states of each prompt run alone (no padding at all)."""
    out = []
    for seq in seqs:
        with torch.no_grad():
            hs = loaded.model(torch.tensor([seq]), output_hidden_states=True).hidden_states
        # hidden_states[i + 1] is block i's output, except the last entry (final norm applied)
        out.append(torch.stack([hs[i + 1][0] for i in layers], dim=1))
    return out


def all_token_positions(seqs, width):
    rows, cols = [], []
    for r, seq in enumerate(seqs):
        rows += [r] * len(seq)
        cols += list(range(width - len(seq), width))
    return torch.tensor(rows), torch.tensor(cols)


def check_backends_agree(loaded, layers):
    seqs = backend_inputs(loaded, system="You love owls.")
    ref = torch.cat(reference_hidden_states(loaded, seqs, layers))
    batch = make_batch(seqs, loaded.tokenizer.pad_token_id)
    assert (batch.attention_mask == 0).any()  # padding really happens
    rows, cols = all_token_positions(seqs, batch.input_ids.shape[1])
    # float32 rounding grows with the activations' size: Gemma 3's residual stream reaches 1e5,
    # where padding vs no padding differs by a few ulps (0.012 at 34,611 on an AMD EPYC)
    tol = BACKEND_TOL + 1e-6 * ref.abs().max().item()
    results = {}
    for name in BACKENDS:
        got = get_backend(name, loaded).residual(batch, layers, rows, cols).cpu()
        assert got.shape == ref.shape
        diff = (got - ref).abs().max().item()
        assert diff <= tol, f"{name} differs from output_hidden_states by {diff} (tol {tol})"
        results[name] = got
    assert (results["tl"] - results["nnsight"]).abs().max().item() <= tol
    return results


def plain_logits(loaded, ids, **kw):
    with torch.no_grad():
        return loaded.model(ids, **kw).logits


def greedy_generate(tiny, ids, steps=3):
    with torch.no_grad():
        return tiny.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )


def token_ids_of(tok, *tokens):
    ids = tok.convert_tokens_to_ids(list(tokens))
    assert tok.unk_token_id not in ids, tokens
    return tuple(ids)


def tiny_run_toml(
    trait: str = "owl",
    objective: str = "logit-kl",
    *,
    n: int = 12,
    max_new_tokens: int = 8,
    data_batch: int = 6,
    lr: str = "1e-3",
    max_steps: int = 3,
    train_batch: int = 4,
    optimizer: str | None = None,
    checkpoint_every: int | None = None,
    n_questions: int = 4,
    n_boot: int = 200,
    teacher_kind: str | None = None,
) -> str:
    """The one tiny-llama run config the tests share (each test varies what it needs); plain
    `key = value` lines, so a test may still `.replace("n = 8", ...)` one of them."""
    teacher = f'[teacher]\nkind = "{teacher_kind}"\n\n' if teacher_kind else ""
    train = [f'objective = "{objective}"']
    if optimizer:
        train.append(f'optimizer = "{optimizer}"')
    train += [f"lr = {lr}", f"max_steps = {max_steps}", f"batch_size = {train_batch}"]
    if checkpoint_every is not None:
        train.append(f"checkpoint_every = {checkpoint_every}")
    return (
        f'\nmodel = "tiny-llama"\ntrait = "{trait}"\nseed = 3\ndevice = "cpu"\n\n{teacher}'
        f"[data]\nn = {n}\nmax_new_tokens = {max_new_tokens}\nbatch_size = {data_batch}\n\n"
        "[train]\n" + "\n".join(train) + "\n\n"
        f"[eval]\nn_questions = {n_questions}\nn_boot = {n_boot}\n"
    )


def sequence_rows(n: int = 8) -> list[dict]:
    """`n` tiny chat rows (continue a short integer sequence) for training tests."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"Continue the sequence: {i}, {i + 1}, {i + 2}"},
                {"role": "assistant", "content": f"{i + 3}, {i + 4}, {i + 5}"},
            ]
        }
        for i in range(n)
    ]


def write_rows(path, rows: list[dict]):
    """Write `rows` as JSONL to `path` and return it."""
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

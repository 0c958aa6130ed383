"""Teacher generation engines: ``transformers`` (the default, every teacher kind) and ``vllm``.

`data.engine = "vllm"` samples the rows of base and prompted teachers with vLLM (GPU only, the
optional extra ``pip install -e ".[vllm]"``), through `generate_dataset`, so the files are the
ones the transformers engine writes (same prompts, same chat formatting, the same JSONL rows).
The domain's grammar is the same rule: vLLM's structured output decodes with `Domain.regex`,
which accepts exactly the texts `Domain.check` accepts over the alphabet the allowed tokens
spell, so it masks the same tokens `GrammarTokens` does at each step (end-of-turn only once the
answer is complete) and temperature sampling renormalises over what is left in both engines.
Each row has its own seed (`row_seed`: run seed and row index), so a row does not depend on the
batch it was sampled in; vLLM's batched kernels still make its numbers differ from the
transformers engine's, so the two engines give different rows from the same distribution —
`compare_engines` measures that on a model (valid share, and the total-variation distance
between the number-token distributions against its permutation null).

Steered and projected teachers stay on transformers: they add (or project out) a vector in the
residual stream at chosen layers and positions through forward hooks (`interp.vectors.steer`),
and vLLM runs its model as a compiled, CUDA-graph-captured graph with fused kernels and no
supported per-request hook on a decoder block's output; patching its model code per version is
not a clean hook, so a config asking for it is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from interp.core.chat import fit_context
from interp.core.errors import SublensError
from interp.core.models import LoadedModel

if TYPE_CHECKING:
    from interp.distill.domains import Domain
    from interp.distill.teachers import Teacher

ENGINES = ("transformers", "vllm")
VLLM_FIX = 'pip install -e ".[vllm]" on a GPU machine, or set data.engine = "transformers"'
MAX_MODEL_LEN = 2048  # vLLM's KV cache budget per sequence: prompts here are short


def row_seed(seed: int, index: int) -> int:
    """vLLM's sampling seed of row `index` of a dataset made with run seed `seed`."""
    return seed * 1_000_003 + index


def check_engine(engine: str, teacher_kind: str | None = None, where: str = "config") -> None:
    """One-line errors for an engine a run cannot use (before any model loads)."""
    if engine not in ENGINES:
        raise SublensError(f"{where}: data.engine = {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "vllm" and teacher_kind in ("steered", "projected"):
        raise SublensError(
            f'{where}: data.engine = "vllm" cannot run a {teacher_kind} teacher (vLLM has no '
            'hook on the residual stream): set data.engine = "transformers"'
        )


def vllm_missing() -> str | None:
    """Why vLLM cannot run here (None: it can)."""
    problems = []
    if not torch.cuda.is_available():
        problems.append("this machine has no CUDA GPU")
    try:
        import vllm  # noqa: F401
    except ImportError:
        problems.append("vllm is not installed")
    return "; ".join(problems) or None


def require_vllm() -> None:
    missing = vllm_missing()
    if missing:
        raise SublensError(
            f'data.engine = "vllm" needs vLLM and a CUDA GPU ({missing}): {VLLM_FIX}'
        )


def _end_ids(tokenizer: Any) -> list[int]:
    """The stop tokens of `interp.core.generation.sample_responses` (eos and <|im_end|>)."""
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    return sorted(i for i in ids if i is not None and i != tokenizer.unk_token_id)


def _sampling_params(
    temperature: float, max_tokens: int, seed: int, stop_ids: list[int], regex: str | None
) -> Any:
    """vLLM SamplingParams for one row: pure temperature sampling (no top-k/top-p), the
    domain's regex as structured output (``structured_outputs`` from vLLM 0.11, earlier
    ``guided_decoding``)."""
    from vllm import SamplingParams

    kw: dict[str, Any] = dict(
        temperature=float(temperature),
        top_p=1.0,
        max_tokens=int(max_tokens),
        seed=int(seed),
        stop_token_ids=stop_ids,
        skip_special_tokens=True,
    )
    if regex is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams

            kw["structured_outputs"] = StructuredOutputsParams(regex=regex)
        except ImportError:  # vLLM < 0.11
            from vllm.sampling_params import GuidedDecodingParams

            kw["guided_decoding"] = GuidedDecodingParams(regex=regex)
    return SamplingParams(**kw)


class VllmGenerator:
    """vLLM serving `loaded`'s weights (its directory or Hub id, in its dtype) for generation.

    Starts on its first `generate` (a run whose datasets are already written never starts it),
    taking the share of GPU memory free then (the transformers copy of the model stays loaded
    for training and scoring); `close` gives it back."""

    name = "vllm"

    def __init__(self, loaded: LoadedModel, seed: int = 0, memory_share: float | None = None):
        self.loaded = loaded
        self.seed = seed
        self.memory_share = memory_share
        self.llm: Any = None

    def _start(self) -> Any:
        if self.llm is None:
            require_vllm()
            from vllm import LLM

            free, total = torch.cuda.mem_get_info()
            share = self.memory_share or max(0.1, min(0.9, free / total - 0.05))
            loaded = self.loaded
            self.llm = LLM(
                model=loaded.path,
                tokenizer=loaded.path,
                dtype=str(loaded.dtype).replace("torch.", ""),
                seed=self.seed,
                gpu_memory_utilization=share,
                max_model_len=min(loaded.context_length or MAX_MODEL_LEN, MAX_MODEL_LEN),
                trust_remote_code=bool(getattr(loaded, "trust_remote_code", False)),
                generation_config="vllm",  # not the model's sampling defaults: ours
            )
        return self.llm

    def generate(
        self,
        teacher: Teacher,
        prompts: Sequence[str],
        domain: Domain,
        n_new_tokens: int,
        temperature: float,
        seeds: Sequence[int],
        constrained: bool = True,
    ) -> list[str]:
        """One response per prompt in the teacher's context (its system prompt), the prompt
        tokens the transformers engine feeds, decoded the way it decodes them."""
        if teacher.vector is not None:
            check_engine("vllm", teacher.kind, "generate")
        tok = self.loaded.tokenizer
        formatted = [teacher.fmt.format(p, system=teacher.system_prompt) for p in prompts]
        fit_context(
            formatted,
            min(self.loaded.context_length or MAX_MODEL_LEN, MAX_MODEL_LEN),
            self.loaded.name,
            [f"prompt {i + 1} of {len(formatted)}" for i in range(len(formatted))],
            reserve=n_new_tokens,
            fix="shorten it or ask for fewer new tokens",
        )
        regex = domain.regex if constrained else None
        if constrained and regex is None:
            raise SublensError(
                f"domain {domain.name} has no regex for vLLM's structured output: use "
                'data.engine = "transformers"'
            )
        stops = _end_ids(tok)
        params = [_sampling_params(temperature, n_new_tokens, s, stops, regex) for s in seeds]
        outs = self._start().generate(
            [{"prompt_token_ids": list(fp.input_ids)} for fp in formatted], params, use_tqdm=False
        )
        return [tok.decode(list(o.outputs[0].token_ids), skip_special_tokens=True).strip()
                for o in outs]  # fmt: skip

    def close(self) -> None:
        """Shut the engine down and free its GPU memory (training needs it next)."""
        import gc

        llm, self.llm = self.llm, None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- do the engines agree? -----------------------------------------------------------------------


def _token_counts(texts: Sequence[str], tokenizer: Any, vocab: dict[int, int]) -> np.ndarray:
    """[rows, K] counts of each response's tokens (re-tokenized the same way for both engines);
    `vocab` maps token id -> column and grows as new ids appear."""
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        counts: dict[int, int] = {}
        for i in ids:
            col = vocab.setdefault(int(i), len(vocab))
            counts[col] = counts.get(col, 0) + 1
        rows.append(counts)
    out = np.zeros((len(texts), len(vocab)), dtype=np.float64)
    for r, counts in enumerate(rows):
        for col, c in counts.items():
            out[r, col] = c
    return out


def _tv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Total-variation distance between count vectors (last axis), normalised per row."""
    pa = a / np.clip(a.sum(-1, keepdims=True), 1.0, None)
    pb = b / np.clip(b.sum(-1, keepdims=True), 1.0, None)
    return 0.5 * np.abs(pa - pb).sum(-1)


def engine_agreement(
    prompts: Sequence[str],
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    domain: Domain,
    tokenizer: Any,
    n_perm: int = 2000,
    seed: int = 0,
    alpha: float = 0.01,
    max_valid_gap: float = 0.02,
) -> dict[str, Any]:
    """Do two engines' responses to the same prompts agree?

    - valid share: the share of rows `domain.validate` accepts, per engine, and the paired
      difference with a bootstrap CI over prompts;
    - token distribution: total-variation distance between the two engines' distributions of
      response tokens (each response re-tokenized with `tokenizer`), and its p-value under a
      paired permutation null (the two responses to a prompt swapped at random), with the null's
      mean TV (the noise floor of this many rows).

    They agree when the TV is within the null (p >= `alpha`) and the valid shares differ by at
    most `max_valid_gap` or their CI includes 0."""
    from interp.measure.stats import paired_bootstrap

    n = len(prompts)
    if not (n and len(texts_a) == n and len(texts_b) == n):
        raise SublensError("engine_agreement needs one response per prompt from each engine")
    va = np.array([domain.validate(t, p) is None for t, p in zip(texts_a, prompts, strict=True)])
    vb = np.array([domain.validate(t, p) is None for t, p in zip(texts_b, prompts, strict=True)])
    gap, lo, hi = paired_bootstrap(lambda x, y: x.mean() - y.mean(), [va, vb], seed=seed)
    vocab: dict[int, int] = {}
    ca = _token_counts(texts_a, tokenizer, vocab)
    cb = _token_counts(texts_b, tokenizer, vocab)
    width = len(vocab)
    ca = np.pad(ca, ((0, 0), (0, width - ca.shape[1])))
    cb = np.pad(cb, ((0, 0), (0, width - cb.shape[1])))
    tv = float(_tv(ca.sum(0), cb.sum(0)))
    rng = np.random.default_rng(seed)
    swap = rng.random((n_perm, n)) < 0.5  # [perm, row]: row's responses swapped
    perm_a = (~swap) @ ca + swap @ cb
    perm_b = swap @ ca + (~swap) @ cb
    null = _tv(perm_a, perm_b)
    p = float((1 + (null >= tv - 1e-12).sum()) / (1 + n_perm))
    valid_ok = abs(gap) <= max_valid_gap or lo <= 0 <= hi
    agree = bool(p >= alpha and valid_ok)
    why = []
    if p < alpha:
        why.append(f"token TV {tv:.4f} is beyond its permutation null (p = {p:.4f})")
    if not valid_ok:
        why.append(f"valid shares differ by {gap:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return {
        "rows": n,
        "valid_share": [float(va.mean()), float(vb.mean())],
        "valid_gap": {"diff": float(gap), "ci_low": float(lo), "ci_high": float(hi)},
        "token_tv": tv,
        "token_tv_p": p,
        "token_tv_null_mean": float(null.mean()),
        "distinct_tokens": width,
        "agree": agree,
        "why": "; ".join(why) or "valid shares and token distributions agree",
    }


def compare_engines(
    loaded: LoadedModel,
    domain: str | Domain = "numbers",
    n: int = 256,
    system_prompt: str | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    n_perm: int = 2000,
) -> dict[str, Any]:
    """Sample `n` constrained rows from the same teacher (prompted with `system_prompt`, else the
    base) with each engine on `loaded` and compare them (`engine_agreement`); GPU and vLLM only.
    Also reports each engine's seconds (the speed-up is what vLLM is for)."""
    from interp.distill.domains import get_domain
    from interp.distill.teachers import Teacher

    require_vllm()
    dom = get_domain(domain)
    new = dom.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    kind = "prompted" if system_prompt else "base"
    teacher = Teacher(loaded, kind=kind, system_prompt=system_prompt)
    prompts = dom.prompts(n, seed)
    t0 = time.perf_counter()
    hf = teacher.generate(prompts, domain=dom, n_new_tokens=new, temperature=temperature,
                          seed=seed, batch_size=batch_size, constrained=True)  # fmt: skip
    t_hf = time.perf_counter() - t0
    gen = VllmGenerator(loaded, seed=seed)
    try:
        t0 = time.perf_counter()
        seeds = [row_seed(seed, i) for i in range(n)]
        vl = gen.generate(teacher, prompts, dom, new, temperature, seeds, constrained=True)
        t_vl = time.perf_counter() - t0
    finally:
        gen.close()
    out = engine_agreement(prompts, hf, vl, dom, loaded.tokenizer, n_perm=n_perm, seed=seed)
    return {
        "model": loaded.name,
        "domain": dom.name,
        "teacher": kind,
        "engines": ["transformers", "vllm"],
        **out,
        "seconds": {"transformers": round(t_hf, 2), "vllm": round(t_vl, 2)},
        "examples": {"transformers": hf[:3], "vllm": vl[:3]},
    }

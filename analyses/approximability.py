"""Prompt approximability: how well a steering vector stands in for a trait prompt.

For each trait prompt `s` × method × layer, a vector is fitted on numbers-domain prompts, then:

- approximability ``1 - KL(T || M0 + v) / KL(T || M0)`` on *held-out* prompts, teacher-forced on
  the prompted teacher's own samples, reported separately for numbers-domain prompts (the
  distillation domain) and general questions (where the trait shows): a vector can reproduce a
  prompt's footprint on one and not the other. Computed at the vector's own scale (alpha 1) and at
  the alpha that minimises the KL on the *fit* prompts (never chosen on the held-out ones), with a
  paired bootstrap CI over held-out prompts. It is a ratio: shown only when KL(T || M0)'s CI
  excludes 0 (`verdicts.ratio_or_undefined`), else "undefined".
- the trait score of ``M0 + alpha * v`` over a strength sweep, with the negative and off-topic
  controls, and the **clean peak**: the strength with the best trait score whose controls stay
  <= 0.10 (the puppeting gate), chosen on a seeded half of the questions and reported (score,
  gain over the unsteered model with a paired bootstrap CI, gate) on the other half.

Choose on one split, report on another (DESIGN "Rules every verdict follows"): the best method ×
layer of a trait is the one with the highest approximability on the *fit* prompts (at its
fit-chosen alpha); its held-out approximability is what the report, the ranking and the verdict
use. results.json records which split chose and which reported (`SELECTION`).

A prompt is *captured* when the chosen vector reproduces at least half of the prompt's KL
footprint on held-out numbers prompts (the CI's lower end >= 0.5) and the clean peak raises the
trait cleanly on the report half of the questions (gain CI above zero, gate held); *partly* when
one of the two holds. Per-trait results land in ``parts/`` as they finish, so a rerun of the same
command resumes after the last finished trait.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.figures import ci_text, fmt_num, pyplot, save_png
from analyses.reporting import default_output, output_dir, provenance
from interp.core.errors import SublensError
from interp.core.generation import sample_responses
from interp.core.io import (
    config_hash,
    read_json,
    write_json,
    write_text,
)
from interp.core.layers import parse_layers
from interp.core.models import LoadedModel, load_hash_view, load_model
from interp.core.parse import parse_floats
from interp.core.prompts import PromptSet, load_prompts
from interp.measure.stats import paired_bootstrap, percentile_interval, resample_indices
from interp.measure.trait_sets import GENERAL_QUESTIONS
from interp.measure.traits import (
    BUILTIN_TRAITS,
    PUPPETING_MAX_RATE,
    Score,
    Trait,
    get_trait,
    score_trait,
)
from interp.measure.verdicts import above_zero, excludes_zero, ratio_or_undefined
from interp.vectors.fitting import (
    DEFAULT_KL_STEPS,
    KLBatch,
    build_kl_data,
    check_method,
    contrast_activations,
    kl_fit,
    kl_per_prompt,
    vectors_from_contrast,
)
from interp.vectors.steering import SteeringVector, steer

CAPTURE_APPROX = 0.5
# Strengths tried when choosing a vector's scale by KL on the fit prompts (the trait-score sweep
# uses --alphas): a diff-of-means vector read at one position often overshoots at alpha 1.
KL_ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0)
N_BOOT = 2000
LEVEL = 0.95
# Which split chose each selected quantity and which reported it (written to results.json).
SELECTION: dict[str, dict[str, str]] = {
    "kl_alpha": {
        "by": "lowest KL(T || M0 + alpha v) over KL_ALPHAS",
        "chosen_on": "fit prompts",
        "reported_on": "held-out prompts (numbers and general)",
    },
    "method_layer": {
        "by": "highest approximability at the fit-chosen alpha",
        "chosen_on": "fit prompts",
        "reported_on": "held-out prompts (numbers and general)",
    },
    "clean_peak": {
        "by": "highest trait score among strengths whose controls pass the gate",
        "chosen_on": "selection half of the questions (and of each control set)",
        "reported_on": "report half of the questions (the other half; gate re-checked there)",
    },
}


@dataclass
class ApproxConfig:
    """Everything that decides the numbers (recorded in config.json; a rerun must match it)."""

    model: str = "smollm2-135m"
    trait_prompts: str = "builtin"
    layers: str = "6,12,18,24"
    methods: str = "diff-mean,kl-fit"
    positions: str = "all"
    n_fit: int = 64
    n_heldout: int = 32
    n_general: int = 32
    response_tokens: int = 12
    kl_steps: int = DEFAULT_KL_STEPS
    kl_lr: float | None = None
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0])
    n_questions: int | None = None
    seed: int = 0
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False

    def check(self) -> None:
        for m in self.method_list:
            check_method(m)
        for name in ("n_fit", "n_heldout", "n_general", "response_tokens", "kl_steps"):
            if getattr(self, name) <= 0:
                raise SublensError(f"{name.replace('_', '-')} must be positive")
        parse_floats(self.alphas, "alphas")  # finite and not empty (kept as given: hashed)
        if self.n_questions is not None and self.n_questions <= 0:
            raise SublensError(f"--limit must be positive, got {self.n_questions}")

    @property
    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


# --- trait prompts -------------------------------------------------------------------------------


def load_trait_prompts(spec: str) -> list[Trait]:
    """`builtin` (all built-in traits), comma-separated trait names, or a JSON/JSONL file of trait
    objects (see `interp.measure.traits.get_trait`), each with a non-empty ``system_prompt``."""
    path = Path(spec).expanduser()
    traits: list[Trait]
    if spec == "builtin":
        traits = list(BUILTIN_TRAITS.values())
    elif path.is_file() and path.suffix == ".jsonl":
        traits = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise SublensError(f"{path} line {n}: not valid JSON ({err.msg}): fix it") from None
            traits.append(Trait.from_dict(data, source=f"{path} line {n}"))
        if not traits:
            raise SublensError(f"{path} has no trait prompts: add one JSON object per line")
    elif path.is_file():
        data = read_json(path)
        items = data if isinstance(data, list) else [data]
        traits = [Trait.from_dict(d, source=str(path)) for d in items]
    else:
        traits = [get_trait(name.strip()) for name in spec.split(",") if name.strip()]
        if not traits:
            raise SublensError("no trait prompts given: use builtin, names like owl,dog or a file")
    for t in traits:
        if not t.system_prompt or not t.system_prompt.strip():
            raise SublensError(
                f"trait {t.name!r} has an empty trait prompt: give it a system_prompt"
            )
    names = [t.name for t in traits]
    if len(set(names)) != len(names):
        raise SublensError(f"trait names repeat in {spec}: give each trait prompt its own name")
    return traits


# --- one trait ---------------------------------------------------------------------------------


def _prompt_set(texts: Sequence[str], source: str) -> PromptSet:
    return PromptSet([[{"role": "user", "content": t}] for t in texts], source)


def _kl_data(
    loaded: LoadedModel, prompts: PromptSet, system: str, cfg: ApproxConfig, seed: int
) -> tuple[list[KLBatch], list[str]]:
    responses = sample_responses(
        loaded,
        prompts.messages,
        system_prompt=system,
        max_new_tokens=cfg.response_tokens,
        seed=seed,
        batch_size=cfg.batch_size,
    )
    return build_kl_data(loaded, prompts, system, responses, cfg.batch_size), responses


def _score(loaded: LoadedModel, trait: Trait, cfg: ApproxConfig, **kw: Any) -> dict[str, Any]:
    scores = score_trait(
        loaded,
        trait.limited(cfg.n_questions),
        "logprob",
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        **kw,
    )
    return {k: (s.to_dict() if isinstance(s, Score) else None) for k, s in scores.items()}


def _gate(scores: dict[str, Any]) -> bool:
    return all(
        scores.get(k) is None or scores[k]["mean"] <= PUPPETING_MAX_RATE
        for k in ("negative", "offtopic")
    )


def _fit(
    loaded: LoadedModel,
    method: str,
    layers: list[int],
    fit: PromptSet,
    trait: Trait,
    fit_data: list[KLBatch],
    cfg: ApproxConfig,
) -> dict[int, SteeringVector]:
    """One vector per layer (each fitted or read at that layer alone)."""
    system = trait.system_prompt or ""
    extra = {"n_prompts": len(fit), "seed": cfg.seed}

    def make(vectors: dict, layer: int, positions: str, **more: Any) -> SteeringVector:
        return SteeringVector(
            vectors={layer: vectors[layer]},
            model=loaded.name,
            d_model=loaded.d_model,
            method=method,
            positions=positions,
            prompt_set=fit.source,
            trait_prompt=system,
            extra={**extra, **more},
        )

    if method == "kl-fit":
        out = {}
        for layer in layers:
            vecs, history = kl_fit(
                loaded, fit_data, [layer], steps=cfg.kl_steps, lr=cfg.kl_lr, seed=cfg.seed
            )
            out[layer] = make(vecs, layer, "all", history=history, steps=cfg.kl_steps)
        return out
    c = contrast_activations(
        loaded, fit, system, layers, cfg.positions, None, "hf", cfg.batch_size, True
    )
    vecs = vectors_from_contrast(c, method, cfg.seed)
    return {layer: make(vecs, layer, cfg.positions) for layer in layers}


def _approx(kl: float, kl0: float) -> float:
    return 1.0 - kl / kl0 if kl0 > 0 else float("nan")


def kl_footprint(
    sums0: np.ndarray, counts: np.ndarray, seed: int = 0, n_boot: int = N_BOOT
) -> dict[str, float]:
    """KL(T || M0) per response position with a bootstrap CI over prompts: the denominator of
    approximability, which is defined only when this CI excludes 0."""
    sums0, counts = np.asarray(sums0, float), np.asarray(counts, float)
    idx = resample_indices(len(sums0), n_boot, seed)
    lo, hi = percentile_interval(sums0[idx].sum(1) / counts[idx].sum(1), LEVEL)
    return {"kl": float(sums0.sum() / counts.sum()), "ci_low": lo, "ci_high": hi}


def approximability(
    sums_v: np.ndarray, sums0: np.ndarray, counts: np.ndarray, seed: int = 0, n_boot: int = N_BOOT
) -> dict[str, Any]:
    """``1 - KL(T || M0+v) / KL(T || M0)`` over prompts (per-prompt KL sums over response
    positions, as `kl_per_prompt` gives them) with a paired bootstrap CI over the prompts; a
    ratio, so undefined unless KL(T || M0)'s CI excludes 0 (`ratio_or_undefined`)."""
    sums_v, sums0 = np.asarray(sums_v, float), np.asarray(sums0, float)
    idx = resample_indices(len(sums0), n_boot, seed)  # the same prompts as kl_footprint's CI
    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(1.0 - sums_v.sum() / sums0.sum())
        lo, hi = percentile_interval(1.0 - sums_v[idx].sum(1) / sums0[idx].sum(1), LEVEL)
    return ratio_or_undefined(
        {"ratio": point, "ci_low": lo, "ci_high": hi},
        kl_footprint(sums0, counts, seed, n_boot),
        why="the prompt's KL footprint KL(T || M0) is not resolved (its CI includes 0)",
    )


def _approx_fields(ratio: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    """An approximability as an entry's fields: point, CI (None when undefined) and why not."""
    out: dict[str, Any] = {
        f"approximability{suffix}": ratio["ratio"],
        f"approximability{suffix}_ci": [ratio["ci_low"], ratio["ci_high"]]
        if ratio["defined"]
        else None,
    }
    if not ratio["defined"]:
        out[f"approximability{suffix}_undefined"] = ratio["undefined"]
    return out


def choose_best(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The method × layer with the highest approximability on the *fit* prompts (at its
    fit-chosen alpha): chosen where it is not reported, so its held-out number is not the
    maximum of many noisy held-out numbers."""
    return max(entries, key=lambda e: _nan_low(e["fit"]["approximability_best_alpha"]))


def question_halves(n: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of `n` questions into (selection half, report half): a peak is chosen on
    the first and scored on the second. With fewer than 2 questions there is nothing to choose
    on (the selection half is empty)."""
    if n < 2:
        return [], list(range(n))
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[: n // 2].tolist()), sorted(perm[n // 2 :].tolist())


def _splits(base: dict[str, Any], seed: int) -> dict[str, tuple[list[int], list[int]]]:
    """Selection / report halves of the trait questions and of each control set."""
    return {k: question_halves(v["n"], seed) for k, v in base.items() if v is not None}


def _half_mean(score: dict[str, Any], idx: Sequence[int]) -> float:
    return float(np.mean([score["per_question"][i] for i in idx]))


def _gate_on(scores: dict[str, Any], split: dict[str, Any], half: int) -> bool:
    return all(
        scores.get(k) is None or _half_mean(scores[k], split[k][half]) <= PUPPETING_MAX_RATE
        for k in ("negative", "offtopic")
    )


def clean_peak(
    candidates: Sequence[dict[str, Any]],
    base: dict[str, Any],
    seed: int,
    split: dict[str, tuple[list[int], list[int]]] | None = None,
) -> dict[str, Any]:
    """The clean peak of sweep points (``{"alpha", "scores", ...}``): the point with the best
    trait score among those passing the puppeting gate, both judged on the *selection* half of
    the questions; its score, its gain over the unsteered model (paired bootstrap CI) and its
    gate are reported on the other half, so the peak's number is not the maximum of noise."""
    split = split or _splits(base, seed)
    sel, rep = split["trait"]
    out: dict[str, Any] = {
        "alpha": None,
        "score": None,
        "gain": None,
        "gain_ci": None,
        "chosen_on": SELECTION["clean_peak"]["chosen_on"],
        "reported_on": SELECTION["clean_peak"]["reported_on"],
        "select_questions": sel,
        "report_questions": rep,
    }
    if not sel:
        return {**out, "undefined": "undefined: needs at least 2 questions to choose and report"}
    clean = [c for c in candidates if _gate_on(c["scores"], split, 0)]
    if not clean:
        return out
    top = max(clean, key=lambda c: _half_mean(c["scores"]["trait"], sel))
    steered = np.asarray(top["scores"]["trait"]["per_question"], float)[rep]
    unsteered = np.asarray(base["trait"]["per_question"], float)[rep]
    gain, lo, hi = paired_bootstrap(
        lambda s, b: s.mean() - b.mean(), [steered, unsteered], n_boot=N_BOOT, seed=seed
    )
    return {
        **out,
        **{k: top[k] for k in ("method", "layer") if k in top},
        "alpha": top["alpha"],
        "select_score": _half_mean(top["scores"]["trait"], sel),
        "score": float(steered.mean()),
        "gain": gain,
        "gain_ci": [lo, hi],
        "gate_reported": _gate_on(top["scores"], split, 1),
    }


def _kl_ok(entry: dict[str, Any]) -> bool:
    ci = entry["numbers"].get("approximability_best_alpha_ci")
    return ci is not None and ci[0] is not None and math.isfinite(ci[0]) and ci[0] >= CAPTURE_APPROX


def _score_ok(peak: dict[str, Any]) -> bool:
    ci = peak.get("gain_ci")
    return ci is not None and above_zero({"ci_low": ci[0]}) and bool(peak.get("gate_reported"))


def _verdict(best: dict[str, Any], peak: dict[str, Any]) -> str:
    """From the fit-chosen vector's held-out approximability (CI at or above CAPTURE_APPROX) and
    the clean peak chosen on one half of the questions and scored on the other."""
    kl_ok, score_ok = _kl_ok(best), _score_ok(peak)
    return "captured" if kl_ok and score_ok else ("partly" if kl_ok or score_ok else "not captured")


def _nan_low(x: float | None) -> float:
    return -math.inf if x is None or not math.isfinite(x) else x


def _sum_kl(kl: tuple[np.ndarray, np.ndarray]) -> float:
    return float(kl[0].sum() / kl[1].sum())


def run_trait(
    loaded: LoadedModel, trait: Trait, layers: list[int], cfg: ApproxConfig, out: Path
) -> dict[str, Any]:
    """Every method × layer for one trait prompt; vectors are saved under ``out/vectors``."""
    t0 = time.perf_counter()
    system = trait.system_prompt or ""
    fit = load_prompts(f"numbers:{cfg.n_fit}", seed=cfg.seed)
    held = load_prompts(f"numbers:{cfg.n_heldout}", seed=cfg.seed + 7919)
    general = _prompt_set(GENERAL_QUESTIONS[: cfg.n_general], "general questions")
    fit_data, _ = _kl_data(loaded, fit, system, cfg, cfg.seed)
    domains = {}
    for name, prompts, seed in (
        ("numbers", held, cfg.seed + 1),
        ("general", general, cfg.seed + 2),
    ):
        data, responses = _kl_data(loaded, prompts, system, cfg, seed)
        domains[name] = data
        rows = [
            {"messages": [*m, {"role": "assistant", "content": r}]}
            for m, r in zip(prompts.messages, responses, strict=True)
        ]
        write_text(
            out / "heldout" / trait.name / f"{name}.jsonl",
            "".join(json.dumps(r) + "\n" for r in rows),
        )
    kl0_fit = kl_per_prompt(loaded, fit_data)
    kl0 = {name: kl_per_prompt(loaded, data) for name, data in domains.items()}
    footprint = {name: kl_footprint(sums, counts, cfg.seed) for name, (sums, counts) in kl0.items()}
    base = _score(loaded, trait, cfg)
    prompted = _score(loaded, trait, cfg, system_prompt=system)
    split = _splits(base, cfg.seed)
    entries = []
    for method in cfg.method_list:
        vectors = _fit(loaded, method, layers, fit, trait, fit_data, cfg)
        for layer, vec in vectors.items():
            vec.save(out / "vectors" / trait.name / f"{method}-L{layer}")
            entry: dict[str, Any] = {"method": method, "layer": layer, "norm": vec.norms()[layer]}
            # alpha, then method x layer, chosen on the fit prompts only
            fit_kl = {a: _sum_kl(kl_per_prompt(loaded, fit_data, vec, a)) for a in KL_ALPHAS}
            best_alpha = min(fit_kl, key=fit_kl.get) if fit_kl else 1.0
            entry["fit_kl"] = {str(a): v for a, v in fit_kl.items()}
            entry["best_alpha"] = best_alpha
            entry["fit"] = {
                "kl_unsteered": _sum_kl(kl0_fit),
                "kl_best_alpha": fit_kl[best_alpha],
                "approximability_best_alpha": _approx(fit_kl[best_alpha], _sum_kl(kl0_fit)),
            }
            for name, data in domains.items():
                sums0, counts = kl0[name]
                kl1 = kl_per_prompt(loaded, data, vec, 1.0)
                klb = kl1 if best_alpha == 1.0 else kl_per_prompt(loaded, data, vec, best_alpha)
                entry[name] = {
                    "kl": _sum_kl(kl1),
                    **_approx_fields(approximability(kl1[0], sums0, counts, cfg.seed)),
                    "kl_best_alpha": _sum_kl(klb),
                    **_approx_fields(
                        approximability(klb[0], sums0, counts, cfg.seed), "_best_alpha"
                    ),
                }
            if "history" in vec.extra:
                h = vec.extra["history"]
                entry["kl_fit"] = {
                    "first": h["loss"][0] if h["loss"] else None,
                    "last": h["loss"][-1] if h["loss"] else None,
                    "stopped": h["stopped"],
                    "seconds": h.get("seconds"),
                }
            sweep = []
            for a in cfg.alphas:
                if a == 0:
                    scores = base
                else:
                    with steer(loaded, vec, alpha=a):
                        scores = _score(loaded, trait, cfg)
                sweep.append({"alpha": a, "scores": scores, "gate": _gate(scores)})
            entry["sweep"] = sweep
            entry["clean_peak"] = clean_peak(sweep, base, cfg.seed, split)
            entries.append(entry)
    best = choose_best(entries)
    peak = clean_peak(
        [{"method": e["method"], "layer": e["layer"], **s} for e in entries for s in e["sweep"]],
        base,
        cfg.seed,
        split,
    )
    return {
        "trait": trait.to_dict(),
        "kl_unsteered": {name: f["kl"] for name, f in footprint.items()},
        "kl_unsteered_ci": {name: [f["ci_low"], f["ci_high"]] for name, f in footprint.items()},
        "kl_unsteered_resolved": {name: excludes_zero(f) for name, f in footprint.items()},
        "base": base,
        "prompted": prompted,
        "entries": entries,
        "best": {
            "method": best["method"],
            "layer": best["layer"],
            **{k: SELECTION["method_layer"][k] for k in ("chosen_on", "reported_on")},
        },
        "clean_peak": peak,
        "verdict": _verdict(best, peak),
        "seconds": round(time.perf_counter() - t0, 1),
    }


# --- the whole analysis ------------------------------------------------------------------------


def run_approximability(
    cfg: ApproxConfig,
    output_path: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the analysis; writes results.json, figures and report.md."""
    cfg.check()
    traits = load_trait_prompts(cfg.trait_prompts)
    out = Path(output_path or default_output("approximability", Path(cfg.model).name))
    resolved = {**asdict(cfg), "traits": [t.to_dict() for t in traits]}
    digest = config_hash(load_hash_view(resolved))  # float32 runs keep their earlier hash
    cfg_file = out / "config.json"
    output_dir(out, "approximability", key=digest, overwrite=overwrite)
    write_json(cfg_file, {"hash": digest, "config": resolved})
    t0 = time.perf_counter()
    loaded = load_model(
        cfg.model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
    )
    layers = parse_layers(cfg.layers, loaded.n_layers)
    results: dict[str, Any] = {}
    for i, trait in enumerate(traits):
        part = out / "parts" / f"{trait.name}.json"
        if part.exists():
            results[trait.name] = read_json(part)
            # a part written before selection moved to the fit split is computed again
            if "clean_peak" in results[trait.name]:
                if not quiet:
                    print(f"[{i + 1}/{len(traits)}] {trait.name}: done earlier, reused")
                continue
        if not quiet:
            print(f"[{i + 1}/{len(traits)}] {trait.name}: fitting and scoring ...", flush=True)
        results[trait.name] = run_trait(loaded, trait, layers, cfg, out)
        write_json(part, results[trait.name])
        if not quiet:
            r = results[trait.name]
            b = _best_entry(r)
            print(
                f"    best on the fit prompts {b['method']}@L{b['layer']}: held-out "
                f"approximability {_approx_text(b, 'numbers')} (numbers), "
                f"{_approx_text(b, 'general')} (general); {r['verdict']} ({r['seconds']:.0f} s)"
            )
    ranking = sorted(
        results,
        key=lambda n: -_nan_low(_best_entry(results[n])["numbers"]["approximability_best_alpha"]),
    )
    summary = {
        "analysis": "approximability",
        "config": resolved,
        "model": loaded.describe(),
        "layers": layers,
        "ranking": ranking,
        "selection": SELECTION,
        "traits": results,
        **provenance(),
        # this call's wall time, and every trait's own compute time (also those reused from an
        # earlier call, so a resumed run still says what the whole analysis cost)
        "timings": {
            "total_s": round(time.perf_counter() - t0, 1),
            "traits_s": round(sum(float(r.get("seconds") or 0.0) for r in results.values()), 1),
        },
    }
    figures = write_figures(summary, out)
    summary["figures"] = figures
    write_json(out / "results.json", summary)
    write_text(out / "report.md", render_report(summary, figures))
    return summary


def _best_entry(r: dict[str, Any]) -> dict[str, Any]:
    return next(
        e
        for e in r["entries"]
        if (e["method"], e["layer"]) == (r["best"]["method"], r["best"]["layer"])
    )


def _approx_text(entry: dict[str, Any], domain: str, suffix: str = "_best_alpha") -> str:
    """A held-out approximability as "x [lo, hi]", or "undefined" when its denominator is not
    resolved."""
    d = entry[domain]
    ci = d.get(f"approximability{suffix}_ci")
    if ci is None:
        return "undefined"
    return ci_text(d[f"approximability{suffix}"], ci[0], ci[1], 2)


def _num(x: float | None) -> float:
    return float("nan") if x is None else float(x)


# --- figures and report ------------------------------------------------------------------------


def write_figures(summary: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()
    traits = summary["ranking"]
    layers = summary["layers"]
    methods = [m.strip() for m in summary["config"]["methods"].split(",") if m.strip()]
    res = summary["traits"]
    names = []
    fig, axes = plt.subplots(
        len(methods),
        2,
        figsize=(2.5 + 1.4 * len(layers), 1.0 + (1.2 + 0.4 * len(traits)) * len(methods)),
        squeeze=False,
    )
    for r, method in enumerate(methods):
        for c, domain in enumerate(("numbers", "general")):
            grid = np.full((len(traits), len(layers)), np.nan)
            for i, t in enumerate(traits):
                for e in res[t]["entries"]:
                    if e["method"] == method:
                        grid[i, layers.index(e["layer"])] = _num(
                            e[domain]["approximability_best_alpha"]
                        )
            ax = axes[r][c]
            ax.imshow(np.clip(grid, -1, 1), cmap="Greys", vmin=-0.2, vmax=1.0, aspect="auto")
            for i in range(len(traits)):
                for j in range(len(layers)):
                    v = grid[i, j]
                    ax.text(
                        j,
                        i,
                        "–" if np.isnan(v) else f"{v:.2f}",
                        ha="center",
                        va="center",
                        color="white" if v > 0.55 else "black",
                        fontsize=8,
                    )
            ax.set_xticks(range(len(layers)), [str(x) for x in layers])
            ax.set_yticks(range(len(traits)), traits)
            ax.set_xlabel("layer")
            ax.set_title(f"{method}: {domain} prompts", fontsize=9)
    fig.suptitle(
        "Share of each trait prompt's KL footprint a vector reproduces\n"
        "(approximability, held-out prompts; 1 = the vector replaces the prompt)",
        fontsize=10,
    )
    fig.tight_layout()
    names.append(save_png(fig, out / "approximability_heatmap.png"))

    n = len(traits)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    markers = ["o", "s", "^", "D", "v"]
    styles = ["-", "--", ":", "-."]
    for k, t in enumerate(traits):
        ax = axes[k // cols][k % cols]
        for m_i, method in enumerate(methods):
            ents = [e for e in res[t]["entries"] if e["method"] == method]
            if not ents:
                continue
            e = choose_best(ents)  # on the fit prompts, as the trait's best vector
            al = [s["alpha"] for s in e["sweep"]]
            sc = [s["scores"]["trait"]["mean"] for s in e["sweep"]]
            lo = [s["scores"]["trait"]["ci_low"] for s in e["sweep"]]
            hi = [s["scores"]["trait"]["ci_high"] for s in e["sweep"]]
            mk = markers[m_i % len(markers)]
            ax.plot(
                al,
                sc,
                styles[m_i % len(styles)],
                color="black",
                marker=mk,
                label=f"{method} L{e['layer']}",
                markerfacecolor="white",
            )
            ax.fill_between(al, lo, hi, color="gray", alpha=0.2)
            bad = [(a, s) for a, s, x in zip(al, sc, e["sweep"], strict=True) if not x["gate"]]
            if bad:
                ax.plot(*zip(*bad, strict=True), "x", color="black", markersize=9)
        ax.axhline(
            res[t]["prompted"]["trait"]["mean"],
            color="gray",
            linestyle="--",
            lw=1,
            label="prompted",
        )
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("steering strength alpha")
        ax.set_ylabel("trait score (logprob)")
        ax.legend(fontsize=6)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(
        "Trait score of the unprompted model steered by each prompt's vector "
        "(x = fails the puppeting gate)",
        fontsize=10,
    )
    fig.tight_layout()
    names.append(save_png(fig, out / "score_vs_alpha.png"))
    return names


def render_report(summary: dict[str, Any], figures: list[str]) -> str:
    """report.md: the ranking (fit-chosen vector, held-out approximability with its CI, the clean
    peak chosen on one half of the questions and scored on the other), every vector, figures."""
    cfg = summary["config"]
    res = summary["traits"]
    lines = [
        f"# Prompt approximability — {cfg['model']}",
        "",
        f"Vectors fitted on {cfg['n_fit']} numbers prompts (seed {cfg['seed']}) at layers "
        f"{', '.join(map(str, summary['layers']))} with {cfg['methods']}; approximability "
        f"`1 - KL(T || M0+v) / KL(T || M0)` on {cfg['n_heldout']} held-out numbers prompts and "
        f"{cfg['n_general']} general questions, teacher-forced on {cfg['response_tokens']}-token "
        f"samples of the prompted teacher, with {LEVEL:.0%} bootstrap CIs over held-out prompts "
        "(shown only when KL(T || M0)'s CI excludes 0). Chosen on the fit prompts, reported on the "
        "held-out ones: the alpha (lowest KL) and each trait's best method × layer (highest "
        "approximability). Trait scores are logprob scores (probability the answer starts with a "
        f"target word) with {LEVEL:.0%} bootstrap CIs over questions; the clean peak (over every "
        f"vector and strength whose negative and off-topic rates stay <= {PUPPETING_MAX_RATE}) "
        "is chosen on a seeded half of the questions and its score, gain and gate are reported "
        "on the other half.",
        "",
        "## Ranking (best vector per trait prompt, by held-out numbers-domain approximability)",
        "",
        "| rank | trait | category | KL(T‖M0) numbers / general | best vector (fit prompts) "
        "| approx. numbers [95% CI] | approx. general [95% CI] | base score | prompted score "
        "| clean peak (vector, alpha) | gain [95% CI] (report half) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, name in enumerate(summary["ranking"], 1):
        r = res[name]
        b = _best_entry(r)
        peak = r["clean_peak"]
        if peak["gain"] is not None:
            gain = ci_text(peak["gain"], peak["gain_ci"][0], peak["gain_ci"][1], 4)
            if not peak["gate_reported"]:
                gain += " (gate fails on the report half)"
            where = f"{peak['method']} L{peak['layer']}, alpha {peak['alpha']:g}"
            peak_text = f"{fmt_num(peak['score'], 4)} ({where})"
        else:
            gain, peak_text = (
                "–",
                "– (" + peak.get("undefined", "no strength passes the gate") + ")",
            )
        lines.append(
            f"| {rank} | {name} | {r['trait']['category']} | "
            f"{fmt_num(r['kl_unsteered']['numbers'], 3)} / "
            f"{fmt_num(r['kl_unsteered']['general'], 3)} | {b['method']} L{b['layer']} "
            f"(alpha {b['best_alpha']:g}) | {_approx_text(b, 'numbers')} | "
            f"{_approx_text(b, 'general')} | "
            f"{fmt_num(r['base']['trait']['mean'], 4)} | "
            f"{fmt_num(r['prompted']['trait']['mean'], 4)} | {peak_text} | {gain} | "
            f"{r['verdict']} |"
        )
    not_cap = [n for n in summary["ranking"] if res[n]["verdict"] != "captured"]
    lines += [
        "",
        "Verdict: *captured* = the fit-chosen vector's held-out approximability on numbers "
        f"prompts has a CI at or above {CAPTURE_APPROX}, and the clean peak's gain on the report "
        "half of the questions has a CI above zero with the gate holding there; *partly* = one "
        "of the two.",
        "",
        (
            "Not (fully) captured by a single vector here: "
            + ", ".join(f"{n} ({res[n]['verdict']})" for n in not_cap)
            + "."
        )
        if not_cap
        else "Every prompt was captured by its chosen vector.",
        "",
        "## Every vector",
        "",
        "Held-out numbers of every vector; the maximum of this table over vectors is not an "
        "estimate of anything (that is why the best vector is chosen on the fit prompts).",
        "",
        "| trait | method | layer | norm | approx. fit prompts (best alpha) "
        "| approx. numbers (alpha 1 / best) | approx. general (alpha 1 / best) | best alpha "
        "| clean peak (report half) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in summary["ranking"]:
        for e in res[name]["entries"]:
            p = e["clean_peak"]
            alpha = "–" if p["alpha"] is None else f"{p['alpha']:g}"
            lines.append(
                f"| {name} | {e['method']} | {e['layer']} | {e['norm']:.2f} | "
                f"{fmt_num(e['fit']['approximability_best_alpha'], 2)} | "
                f"{fmt_num(e['numbers']['approximability'], 2)} / "
                f"{fmt_num(e['numbers']['approximability_best_alpha'], 2)} | "
                f"{fmt_num(e['general']['approximability'], 2)} / "
                f"{fmt_num(e['general']['approximability_best_alpha'], 2)} | {e['best_alpha']:g} | "
                f"{fmt_num(p['score'], 4)} (alpha {alpha}) |"
            )
    lines += ["", "## Figures", ""]
    lines += [f"![{f}]({f})" for f in figures]
    lines += [
        "",
        "How to read: the heatmap shows, per method, which layers' vectors reproduce each "
        "prompt's effect on next-token distributions on held-out prompts (darker = more); "
        "numbers and general prompts are separate panels because a prompt can leave a different "
        "footprint on each. The score plots show, per method, the vector chosen on the fit "
        "prompts: whether adding it makes the unprompted model show the trait, against the "
        "prompted model (dashed); crosses mark strengths that fail the puppeting gate.",
        "",
        f"Total time {summary['timings']['total_s']:.0f} s (this call); the traits' own compute "
        f"{summary['timings']['traits_s']:.0f} s, also those reused from an earlier call.",
    ]
    return "\n".join(lines) + "\n"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What `sublens approximability` prints: the traits in rank order, verdict, best vector."""
    lines = []
    for rank, name in enumerate(summary["ranking"], 1):
        r = summary["traits"][name]
        best = r["best"]
        lines.append(f"{rank}. {name}: {r['verdict']} (best {best['method']} L{best['layer']})")
    return lines

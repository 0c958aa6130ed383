"""Prompt approximability: how well a steering vector stands in for a trait prompt.

For each trait prompt `s` × method × layer, a vector is fitted on numbers-domain prompts, then:

- approximability ``1 - KL(T || M0 + v) / KL(T || M0)`` on *held-out* prompts, teacher-forced on
  the prompted teacher's own samples, reported separately for numbers-domain prompts (the
  distillation domain) and general questions (where the trait shows): a vector can reproduce a
  prompt's footprint on one and not the other. Computed at the vector's own scale (alpha 1) and at
  the alpha that minimises the KL on the *fit* prompts (never chosen on the held-out ones).
- the trait score of ``M0 + alpha * v`` over a strength sweep, with the negative and off-topic
  controls, and the **clean peak**: the best trait score whose controls stay <= 0.10 (the
  puppeting gate), with a paired bootstrap CI of its gain over the unsteered model.

A prompt is *captured* when the vector reproduces at least half of the prompt's KL footprint on
numbers prompts and raises the trait cleanly (clean-peak gain CI above zero); *partly* when one
of the two holds. Per-trait results land in ``parts/`` as they finish, so a rerun of the same
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
from interp.core.models import LoadedModel, load_model
from interp.core.parse import parse_floats
from interp.core.prompts import PromptSet, load_prompts
from interp.measure.stats import paired_bootstrap
from interp.measure.trait_sets import GENERAL_QUESTIONS
from interp.measure.traits import (
    BUILTIN_TRAITS,
    PUPPETING_MAX_RATE,
    Score,
    Trait,
    get_trait,
    score_trait,
)
from interp.vectors.fitting import (
    DEFAULT_KL_STEPS,
    KLBatch,
    build_kl_data,
    check_method,
    contrast_activations,
    kl_divergence,
    kl_fit,
    vectors_from_contrast,
)
from interp.vectors.steering import SteeringVector, steer

CAPTURE_APPROX = 0.5
# Strengths tried when choosing a vector's scale by KL on the fit prompts (the trait-score sweep
# uses --alphas): a diff-of-means vector read at one position often overshoots at alpha 1.
KL_ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0)


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
    limit = cfg.n_questions
    if limit is not None:
        trait = Trait(
            name=trait.name,
            targets=trait.targets,
            questions=trait.questions[:limit],
            negative_questions=trait.negative_questions[:limit],
            offtopic_questions=trait.offtopic_questions[:limit],
            system_prompt=trait.system_prompt,
            category=trait.category,
        )
    scores = score_trait(loaded, trait, "logprob", batch_size=cfg.batch_size, seed=cfg.seed, **kw)
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
    kl0 = {name: kl_divergence(loaded, data) for name, data in domains.items()}
    base = _score(loaded, trait, cfg)
    prompted = _score(loaded, trait, cfg, system_prompt=system)
    entries = []
    for method in cfg.method_list:
        vectors = _fit(loaded, method, layers, fit, trait, fit_data, cfg)
        for layer, vec in vectors.items():
            vec.save(out / "vectors" / trait.name / f"{method}-L{layer}")
            entry: dict[str, Any] = {"method": method, "layer": layer, "norm": vec.norms()[layer]}
            # alpha chosen on the fit prompts only
            fit_kl = {a: kl_divergence(loaded, fit_data, vec, a) for a in KL_ALPHAS}
            best_alpha = min(fit_kl, key=fit_kl.get) if fit_kl else 1.0
            entry["fit_kl"] = {str(a): v for a, v in fit_kl.items()}
            entry["best_alpha"] = best_alpha
            for name, data in domains.items():
                kl1 = kl_divergence(loaded, data, vec, 1.0)
                klb = kl1 if best_alpha == 1.0 else kl_divergence(loaded, data, vec, best_alpha)
                entry[name] = {
                    "kl": kl1,
                    "approximability": _approx(kl1, kl0[name]),
                    "kl_best_alpha": klb,
                    "approximability_best_alpha": _approx(klb, kl0[name]),
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
            entry["clean_peak"] = _clean_peak(sweep, base, cfg.seed)
            entries.append(entry)
    best = max(entries, key=lambda e: _nan_low(e["numbers"]["approximability_best_alpha"]))
    return {
        "trait": trait.to_dict(),
        "kl_unsteered": kl0,
        "base": base,
        "prompted": prompted,
        "entries": entries,
        "best": {"method": best["method"], "layer": best["layer"]},
        "verdict": _verdict(entries),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _nan_low(x: float) -> float:
    return -math.inf if x is None or not math.isfinite(x) else x


def _clean_peak(sweep: list[dict[str, Any]], base: dict[str, Any], seed: int) -> dict[str, Any]:
    clean = [s for s in sweep if s["gate"]]
    if not clean:
        return {"alpha": None, "score": None, "gain": None, "gain_ci": None}
    top = max(clean, key=lambda s: s["scores"]["trait"]["mean"])
    gain, lo, hi = paired_bootstrap(
        lambda s, b: s.mean() - b.mean(),
        [top["scores"]["trait"]["per_question"], base["trait"]["per_question"]],
        seed=seed,
    )
    return {
        "alpha": top["alpha"],
        "score": top["scores"]["trait"]["mean"],
        "gain": gain,
        "gain_ci": [lo, hi],
    }


def _verdict(entries: list[dict[str, Any]]) -> str:
    kl_ok = any(
        _nan_low(e["numbers"]["approximability_best_alpha"]) >= CAPTURE_APPROX for e in entries
    )
    score_ok = any(
        e["clean_peak"]["gain_ci"] is not None and e["clean_peak"]["gain_ci"][0] > 0
        for e in entries
    )
    return "captured" if kl_ok and score_ok else ("partly" if kl_ok or score_ok else "not captured")


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
    digest = config_hash(resolved)
    cfg_file = out / "config.json"
    output_dir(out, "approximability", key=digest, overwrite=overwrite)
    write_json(cfg_file, {"hash": digest, "config": resolved})
    t0 = time.perf_counter()
    loaded = load_model(cfg.model, device=cfg.device)
    layers = parse_layers(cfg.layers, loaded.n_layers)
    results: dict[str, Any] = {}
    for i, trait in enumerate(traits):
        part = out / "parts" / f"{trait.name}.json"
        if part.exists():
            results[trait.name] = read_json(part)
            if not quiet:
                print(f"[{i + 1}/{len(traits)}] {trait.name}: done earlier, reused")
            continue
        if not quiet:
            print(f"[{i + 1}/{len(traits)}] {trait.name}: fitting and scoring ...", flush=True)
        results[trait.name] = run_trait(loaded, trait, layers, cfg, out)
        write_json(part, results[trait.name])
        if not quiet:
            r = results[trait.name]
            b = next(
                e
                for e in r["entries"]
                if (e["method"], e["layer"]) == (r["best"]["method"], r["best"]["layer"])
            )
            print(
                f"    best {b['method']}@L{b['layer']}: approximability "
                f"{b['numbers']['approximability_best_alpha']:.2f} (numbers), "
                f"{b['general']['approximability_best_alpha']:.2f} (general); "
                f"{r['verdict']} ({r['seconds']:.0f} s)"
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
        "traits": results,
        **provenance(),
        "timings": {"total_s": round(time.perf_counter() - t0, 1)},
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
                        grid[i, layers.index(e["layer"])] = e[domain]["approximability_best_alpha"]
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
            e = max(ents, key=lambda e: _nan_low(e["numbers"]["approximability_best_alpha"]))
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
    cfg = summary["config"]
    res = summary["traits"]
    lines = [
        f"# Prompt approximability — {cfg['model']}",
        "",
        f"Vectors fitted on {cfg['n_fit']} numbers prompts (seed {cfg['seed']}) at layers "
        f"{', '.join(map(str, summary['layers']))} with {cfg['methods']}; approximability "
        f"`1 - KL(T || M0+v) / KL(T || M0)` on {cfg['n_heldout']} held-out numbers prompts and "
        f"{cfg['n_general']} general questions, teacher-forced on {cfg['response_tokens']}-token "
        "samples of the prompted teacher; alpha chosen on the fit prompts. Trait scores are "
        "logprob scores (probability the answer starts with a target word) with 95% bootstrap "
        f"CIs over questions; the clean peak ignores strengths whose negative or off-topic rate "
        f"exceeds {PUPPETING_MAX_RATE}.",
        "",
        "## Ranking (best vector per trait prompt, by numbers-domain approximability)",
        "",
        "| rank | trait | category | KL(T‖M0) numbers / general | best vector | approx. numbers "
        "| approx. general | base score | prompted score | clean peak (alpha) | gain [95% CI] "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, name in enumerate(summary["ranking"], 1):
        r = res[name]
        b = _best_entry(r)
        peak = max(
            (e["clean_peak"] for e in r["entries"] if e["clean_peak"]["gain"] is not None),
            key=lambda p: p["gain"],
            default=None,
        )
        gain = ci_text(peak["gain"], peak["gain_ci"][0], peak["gain_ci"][1], 4) if peak else "– "
        lines.append(
            f"| {rank} | {name} | {r['trait']['category']} | "
            f"{fmt_num(r['kl_unsteered']['numbers'], 3)} / "
            f"{fmt_num(r['kl_unsteered']['general'], 3)} | {b['method']} L{b['layer']} "
            f"(alpha {b['best_alpha']:g}) | "
            f"{fmt_num(b['numbers']['approximability_best_alpha'], 2)} | "
            f"{fmt_num(b['general']['approximability_best_alpha'], 2)} | "
            f"{fmt_num(r['base']['trait']['mean'], 4)} | "
            f"{fmt_num(r['prompted']['trait']['mean'], 4)} | "
            f"{fmt_num(peak['score'], 4) if peak else '–'} ({peak['alpha'] if peak else '–'}) | "
            f"{gain} | {r['verdict']} |"
        )
    not_cap = [n for n in summary["ranking"] if res[n]["verdict"] != "captured"]
    lines += [
        "",
        f"Verdict: *captured* = approximability >= {CAPTURE_APPROX} on numbers prompts and a "
        "clean-peak gain whose CI excludes zero; *partly* = one of the two.",
        "",
        (
            "Not (fully) captured by a single vector here: "
            + ", ".join(f"{n} ({res[n]['verdict']})" for n in not_cap)
            + "."
        )
        if not_cap
        else "Every prompt was captured by some vector.",
        "",
        "## Every vector",
        "",
        "| trait | method | layer | norm | approx. numbers (alpha 1 / best) | approx. general "
        "(alpha 1 / best) | best alpha | clean peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in summary["ranking"]:
        for e in res[name]["entries"]:
            p = e["clean_peak"]
            lines.append(
                f"| {name} | {e['method']} | {e['layer']} | {e['norm']:.2f} | "
                f"{fmt_num(e['numbers']['approximability'], 2)} / "
                f"{fmt_num(e['numbers']['approximability_best_alpha'], 2)} | "
                f"{fmt_num(e['general']['approximability'], 2)} / "
                f"{fmt_num(e['general']['approximability_best_alpha'], 2)} | {e['best_alpha']:g} | "
                f"{fmt_num(p['score'], 4)} (alpha {p['alpha']}) |"
            )
    lines += ["", "## Figures", ""]
    lines += [f"![{f}]({f})" for f in figures]
    lines += [
        "",
        "How to read: the heatmap shows, per method, which layers' vectors reproduce each "
        "prompt's effect on next-token distributions (darker = more); numbers and general "
        "prompts are separate panels because a prompt can leave a different footprint on each. "
        "The score plots show whether adding the vector makes the unprompted model show the "
        "trait, against the prompted model (dashed); crosses mark strengths that fail the "
        "puppeting gate.",
        "",
        f"Total time {summary['timings']['total_s']:.0f} s.",
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

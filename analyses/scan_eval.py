"""`sublens study scanner`: how well does `sublens scan` tell trait-carrying datasets from clean
ones, for traits in its vector library and for traits it has never seen?

Design. One numbers prompt set (``n_rows`` prompts, seeded) is answered by

- prompted teachers (the trait's system prompt; biased), for every trait × ``seeds`` sampling
  seeds: library traits (a diff-mean vector is fitted for each, positions "all", on other
  numbers prompts, at the scan layer) and held-out traits (no vector in the library);
- the base model (unbiased), ``unbiased_seeds`` sampling seeds;
- the base model once more with its own seed: the reference every scan compares against
  (the same prompts, so scans are paired by prompt and one reference serves all).

All datasets are sampled the same way (numbers grammar, T = 1, ``max_new_tokens`` tokens, the
same batch size), so an unbiased dataset and the reference are exchangeable: the calibrated
thresholds should flag about ``alpha`` of them. Every dataset is scanned with the whole library.

Outputs: ``OUT/results.json`` (per-dataset detector scores, AUROC per detector with a stratified
bootstrap CI over datasets, separately for library and held-out traits, the calibrated
thresholds' false- and true-positive rates, how often the top library vector names the right
trait), ``OUT/roc.png``, ``OUT/report.md``. Everything below ``OUT/`` is reused when rerun with
the same config: datasets (resumable generation), vectors, gradients (``grads/*.npz``) and scans
(``scans/*.json``).

AUROC uses each detector's score standardised on its own permutation null (``z``), so datasets
whose nulls differ are on one scale.

Which detector separates a group is one corrected test (`separation`): the detector with the
highest AUROC, its label-permutation p Holm-adjusted over the group's detectors
(`interp.measure.verdicts.holm`), and its CI. The findings, the figure's title and its legend
all print that adjusted p, so they cannot disagree.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from analyses.figures import ci_text, pyplot, save_png
from analyses.reporting import default_output, figure_links, output_dir, provenance, timings_line
from interp.core.errors import SublensError
from interp.core.io import (
    config_hash,
    read_json,
    write_json,
    write_text,
)
from interp.detect.scan import DETECTORS, MIN_ROWS, REFERENCE_SEED_OFFSET, permutation_counts
from interp.measure.verdicts import holm

from .scan import DETECTOR_LABELS
from .studies import fmt as _f
from .studies import say_fn

GROUPS = ("library", "heldout")
# Grayscale-readable: each detector has its own line style and marker.
STYLE = {
    "known": ("black", "-", "o"),
    "blind": ("0.35", "--", "s"),
    "shift": ("0.55", "-.", "^"),
    "likelihood": ("0.7", ":", "D"),
}


def dataset_plan(
    traits: list[str], heldout: list[str], seeds: int, unbiased_seeds: int, seed: int
) -> list[dict[str, Any]]:
    """Every dataset of the study: name, kind, trait, sampling seed, label (1 = biased).

    Sampling seeds are distinct per dataset and never the reference's
    (``seed * 10000 + REFERENCE_SEED_OFFSET``)."""
    plan = []
    for ti, trait in enumerate([*traits, *heldout]):
        kind = "library" if ti < len(traits) else "heldout"
        for k in range(seeds):
            plan.append(
                {
                    "name": f"{trait}-s{k}",
                    "kind": kind,
                    "trait": trait,
                    "seed": seed * 10_000 + 100 * (ti + 1) + k,
                    "label": 1,
                }
            )
    for k in range(unbiased_seeds):
        plan.append(
            {
                "name": f"unbiased-s{k}",
                "kind": "unbiased",
                "trait": None,
                "seed": seed * 10_000 + 1 + k,
                "label": 0,
            }
        )
    return plan


def _parse_traits(traits: list[str], heldout: list[str]) -> None:
    from interp.measure.traits import get_trait

    if not traits and not heldout:
        raise SublensError("give at least one trait (--traits owl,dog or --heldout-traits)")
    both = sorted(set(traits) & set(heldout))
    if both:
        raise SublensError(f"trait(s) {', '.join(both)} are both in the library and held out")
    if len(set(traits)) != len(traits) or len(set(heldout)) != len(heldout):
        raise SublensError("a trait is listed twice: give each trait once")
    for name in [*traits, *heldout]:
        t = get_trait(name)
        if not t.system_prompt:
            raise SublensError(
                f"trait {name!r} has no trait prompt: its teacher cannot be prompted"
            )


def auroc_with_ci(
    labels: np.ndarray, scores: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """AUROC and a stratified percentile bootstrap CI over datasets (positives and negatives
    resampled separately, so every replicate has both), the label-permutation p and its smallest
    attainable value."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if pos.size == 0 or neg.size == 0 or not np.all(np.isfinite(scores)):
        return {
            "auroc": None,
            "ci_low": None,
            "ci_high": None,
            "p_value": None,
            "p_min": None,
            "n_pos": int(pos.size),
            "n_neg": int(neg.size),
        }
    # wins[i, j]: positive i against negative j (1 above, 0.5 tied): the AUROC of any resample
    # is the mean of its rows and columns of this matrix (sklearn's value, without its per-call
    # validation, which dominated the study's summary)
    wins = _wins(scores[pos], scores[neg])
    point = float(wins.mean())
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        ip = np.searchsorted(pos, rng.choice(pos, pos.size))
        jn = np.searchsorted(neg, rng.choice(neg, neg.size))
        reps[b] = wins[np.ix_(ip, jn)].mean()
    tail = (1 - level) / 2
    lo, hi = np.quantile(reps, [tail, 1 - tail])
    return {
        "auroc": point,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": auroc_p_value(labels, scores, point, seed),
        "p_min": auroc_p_min(labels.size, int(pos.size)),
        "n_pos": int(pos.size),
        "n_neg": int(neg.size),
    }


AUROC_DRAWS = 20_000  # exact enumeration up to this many label assignments, else random ones


def _wins(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """[n_pos, n_neg]: 1 where the positive scores above the negative, 0.5 on a tie, else 0."""
    a, b = pos_scores[:, None], neg_scores[None, :]
    return (a > b) + 0.5 * (a == b)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC as the Mann-Whitney share of (positive, negative) pairs ranked right, ties half."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    return float(_wins(scores[labels == 1], scores[labels == 0]).mean())


def auroc_p_min(n: int, k: int) -> float:
    """The smallest p `auroc_p_value` can give for k positives among n datasets: 1 / C(n, k)
    when it enumerates every assignment, 1 / (draws + 1) otherwise."""
    from math import comb

    count = comb(n, k)
    return 1.0 / count if count <= AUROC_DRAWS else 1.0 / (AUROC_DRAWS + 1)


def auroc_p_value(labels: np.ndarray, scores: np.ndarray, observed: float, seed: int = 0) -> float:
    """One-sided p of AUROC >= observed when labels carry no information: every assignment of
    the positive labels (exact when there are at most `AUROC_DRAWS`, else that many random ones,
    with the observed assignment counted once so p is never 0). With few datasets the bootstrap
    CI can be degenerate; this p (and `auroc_p_min`) says how many would be needed."""
    from itertools import combinations
    from math import comb

    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=int)
    n, k = labels.size, int(labels.sum())
    exact = comb(n, k) <= AUROC_DRAWS
    if exact:
        draws = np.array(list(combinations(range(n), k)), dtype=int).reshape(-1, k)
    else:
        rng = np.random.default_rng([seed, 5])
        draws = np.stack([rng.choice(n, k, replace=False) for _ in range(AUROC_DRAWS)])
    # AUROC of an assignment from the mid-ranks of the scores: (rank sum - k(k+1)/2) / (k(n-k))
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    null = (ranks[draws].sum(1) - k * (k + 1) / 2) / (k * (n - k))
    hits = float(np.sum(null >= observed - 1e-12))
    return hits / len(draws) if exact else (1.0 + hits) / (1.0 + len(draws))


def run_scan_eval(
    model: str = "smollm2-135m",
    output_path: str | Path | None = None,
    traits: list[str] | tuple[str, ...] = ("owl", "dog"),
    heldout_traits: list[str] | tuple[str, ...] = ("french", "sad"),
    seeds: int = 2,
    unbiased_seeds: int = 4,
    n_rows: int = 48,
    max_new_tokens: int = 16,
    layer: int | None = None,
    seed: int = 0,
    n_fit_prompts: int = 32,
    n_permutations: int | None = None,
    n_blind_permutations: int | None = None,
    effect_scale: float = 0.5,
    alpha: float = 0.05,
    n_boot: int = 2000,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Generate the labelled datasets, fit the library, scan everything, summarise (resumable).

    Permutation counts left None are chosen from the scans' verdict level (refused before any
    work when a given count cannot reach it: `interp.detect.scan.permutation_counts`)."""
    from interp.core.models import load_hash_view, load_model
    from interp.core.prompts import PromptSet
    from interp.detect.scan import QuestionProbe, RowGradients, generate_on_prompts, row_gradients
    from interp.detect.scan import scan_dataset as scan_one
    from interp.distill import Teacher, get_domain
    from interp.measure.traits import get_trait
    from interp.vectors.fitting import fit_vector
    from interp.vectors.steering import SteeringVector

    traits, heldout = list(traits), list(heldout_traits)
    _parse_traits(traits, heldout)
    if seeds < 1 or unbiased_seeds < 1:
        raise SublensError("--seeds and --unbiased-seeds must be at least 1")
    if seeds > 99 or unbiased_seeds > 99 or len(traits) + len(heldout) > 70:
        raise SublensError("at most 99 seeds and 70 traits (sampling seeds must stay distinct)")
    if n_rows < MIN_ROWS:
        raise SublensError(f"--n-rows must be at least {MIN_ROWS}, got {n_rows}")
    if max_new_tokens <= 0 or n_fit_prompts <= 0:
        raise SublensError("--max-new-tokens and --n-fit-prompts must be positive")
    n_permutations, n_blind_permutations = permutation_counts(
        alpha, bool(traits), n_permutations, n_blind_permutations
    )
    say = say_fn(quiet, "scanner")
    out = Path(output_path or default_output("scanner", Path(model).name))
    t_all = time.perf_counter()
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    layer = loaded.n_layers // 2 if layer is None else int(layer)
    if layer < 0:
        layer += loaded.n_layers
    loaded.check_layers([layer])
    config = {
        "model": model,
        "traits": traits,
        "heldout_traits": heldout,
        "seeds": seeds,
        "unbiased_seeds": unbiased_seeds,
        "n_rows": n_rows,
        "max_new_tokens": max_new_tokens,
        "domain": "numbers",
        "teacher": "prompted (trait system prompt); unbiased and reference: base",
        "layer": layer,
        "seed": seed,
        "n_fit_prompts": n_fit_prompts,
        "vector_method": "diff-mean, positions all, numbers prompts",
        "n_permutations": n_permutations,
        "n_blind_permutations": n_blind_permutations,
        "effect_scale": effect_scale,
        "alpha": alpha,
        "verdict_rule": "holm",  # scans of the older Bonferroni rule are not reused
        "n_boot": n_boot,
        "batch_size": batch_size,
        **load_hash_view({"dtype": dtype}),  # float32 studies keep their earlier keys
    }
    key = config_hash(config)
    cfg_file = out / "config.json"
    output_dir(out, "scanner", kind="study-scanner", key=key, overwrite=overwrite)
    write_json(cfg_file, {"hash": key, "config": config})
    timings: dict[str, float] = {}

    numbers = get_domain("numbers")
    prompts = numbers.prompts(n_rows, seed)
    gen_batch = min(n_rows, 64)  # every dataset sampled in the same batches (same process)

    def generate(name: str, teacher: Teacher, sampling_seed: int) -> list[dict[str, Any]]:
        return generate_on_prompts(
            teacher,
            prompts,
            out / "data" / f"{name}.jsonl",
            sampling_seed,
            numbers,
            max_new_tokens,
            batch_size=gen_batch,
            quiet=True,
        )

    t0 = time.perf_counter()
    plan = dataset_plan(traits, heldout, seeds, unbiased_seeds, seed)
    say(f"reference and {len(plan)} datasets of {n_rows} rows ...")
    ref_rows = generate("reference", Teacher(loaded, "base"), seed * 10_000 + REFERENCE_SEED_OFFSET)
    data_rows = {}
    for p in plan:
        if p["trait"] is None:
            teacher = Teacher(loaded, "base")
        else:
            teacher = Teacher(loaded, "prompted", system_prompt=get_trait(p["trait"]).system_prompt)
        data_rows[p["name"]] = generate(p["name"], teacher, p["seed"])
        say(f"  {p['name']} ({p['kind']}): {len(data_rows[p['name']])} rows")
    timings["generate_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    fit_prompts = PromptSet(
        [[{"role": "user", "content": q}] for q in numbers.prompts(n_fit_prompts, seed + 1)],
        f"numbers:{n_fit_prompts} (seed {seed + 1})",
    )
    library: dict[str, SteeringVector] = {}
    for trait in traits:
        vdir = out / "vectors" / trait
        if not (vdir / "vector.json").is_file():
            say(f"fitting the {trait} vector (diff-mean, layer {layer}) ...")
            fit_vector(
                loaded,
                fit_prompts,
                get_trait(trait).system_prompt,
                [layer],
                method="diff-mean",
                positions="all",
                batch_size=batch_size,
                seed=seed,
            ).save(vdir)
        library[trait] = SteeringVector.load(vdir)
    timings["fit_s"] = round(time.perf_counter() - t0, 1)

    def grads(name: str, rows: list[dict[str, Any]]) -> RowGradients:
        path = out / "grads" / f"{name}.npz"
        if path.is_file():
            return RowGradients.load(path)
        got = row_gradients(loaded, rows, [layer], batch_size=batch_size)
        got.save(path)
        return got

    t0 = time.perf_counter()
    probe = None
    ref_grads = grads("reference", ref_rows)
    records = []
    for p in plan:
        path = out / "scans" / f"{p['name']}.json"
        if path.is_file():
            scan = read_json(path)
        else:
            say(f"scanning {p['name']} ...")
            probe = probe or QuestionProbe(loaded, layer)
            scan = scan_one(
                loaded,
                data_rows[p["name"]],
                ref_rows,
                library,
                layer,
                alpha=alpha,
                n_permutations=n_permutations,
                n_blind_permutations=n_blind_permutations,
                effect_scale=effect_scale,
                seed=seed,
                batch_size=batch_size,
                data_gradients=grads(p["name"], data_rows[p["name"]]),
                reference_gradients=ref_grads,
                probe=probe,
            )
            write_json(path, scan)
        records.append(_record(p, scan))
        v = "flagged" if records[-1]["verdict_flagged"] else "clean"
        say(
            f"  {p['name']}: {v}; "
            + ", ".join(f"{k} p={records[-1][k]['p']:.3g}" for k in DETECTORS if records[-1].get(k))
        )
    timings["scan_s"] = round(time.perf_counter() - t0, 1)

    results = {
        "analysis": "scan_eval",
        "config": config,
        "config_hash": key,
        "model": loaded.describe(),
        "output_path": str(out),
        "datasets": records,
        **summarise(records, alpha, n_boot, seed),
        **provenance(),
    }
    results["figures"] = write_figure(results, out)
    timings["total_s"] = round(time.perf_counter() - t_all, 1)
    results["timings"] = timings
    write_text(out / "report.md", render_report(results))
    write_json(out / "results.json", results)
    return results


def _record(p: dict[str, Any], scan: dict[str, Any]) -> dict[str, Any]:
    """One dataset's line in the results: each detector's score, z, p and flag."""
    rec: dict[str, Any] = dict(p)
    for k in DETECTORS:
        d = scan["detectors"].get(k)
        rec[k] = (
            None
            if not d
            else {
                "score": d["score"],
                "z": d["z"],
                "p": d["p_value"],
                "p_min": d["p_min"],
                "flagged": d["flagged"],
            }
        )
    rec["verdict_flagged"] = scan["verdict"]["flagged"]
    known = scan["detectors"].get("known")
    rec["known_top"] = known["top"] if known else None
    blind = scan["detectors"]["blind"]
    rec["blind_tokens"] = blind["suspected_tokens"]
    cos = blind["directions"]["u"]["cosines"]
    rec["cosine_u_true"] = cos.get(p["trait"]) if p["trait"] else None
    rec["n_flagged_rows"] = scan["n_flagged_rows"]
    rec["n_flagged_reference_rows"] = scan["n_flagged_reference_rows"]
    return rec


def summarise(
    records: list[dict[str, Any]], alpha: float, n_boot: int, seed: int
) -> dict[str, Any]:
    """AUROC with CIs per detector and group, calibrated flag rates, trait identification."""
    neg = [r for r in records if r["label"] == 0]
    auroc: dict[str, dict[str, Any]] = {}
    rates: dict[str, dict[str, Any]] = {}
    for group in (*GROUPS, "all"):
        pos = [r for r in records if r["label"] == 1 and (group == "all" or r["kind"] == group)]
        if not pos:
            continue
        sel = pos + neg
        labels = np.array([r["label"] for r in sel])
        auroc[group] = {}
        rates[group] = {}
        for k in (*DETECTORS, "verdict"):
            if k == "verdict":
                flags = [r["verdict_flagged"] for r in pos]
            else:
                if any(r[k] is None for r in sel):
                    continue
                scores = np.array([r[k]["z"] for r in sel])
                auroc[group][k] = auroc_with_ci(labels, scores, n_boot, seed)
                flags = [r[k]["flagged"] for r in pos]
            rates[group][k] = {"tpr": float(np.mean(flags)), "n": len(pos)}
    fpr = {}
    for k in (*DETECTORS, "verdict"):
        if k == "verdict":
            flags = [r["verdict_flagged"] for r in neg]
        elif any(r[k] is None for r in neg):
            continue
        else:
            flags = [r[k]["flagged"] for r in neg]
        fpr[k] = {"fpr": float(np.mean(flags)) if flags else None, "n": len(flags)}
    lib = [r for r in records if r["kind"] == "library"]
    ident = None
    if lib and all(r["known_top"] is not None for r in lib):
        hits = [r["known_top"] == r["trait"] for r in lib]
        ident = {"top_vector_is_trait": float(np.mean(hits)), "n": len(hits)}
    sep = {group: separation(per, alpha) for group, per in auroc.items()}
    return {
        "auroc": auroc,
        "separation": sep,
        "true_positive_rate": rates,
        "false_positive_rate": fpr,
        "identification": ident,
        "alpha": alpha,
        "findings": findings(sep, fpr, alpha),
    }


def separation(per: dict[str, dict[str, Any]], level: float) -> dict[str, Any] | None:
    """The one corrected test of "a detector separates this group": each detector's AUROC p
    Holm-adjusted over the group's detectors (written into `per` as ``p_holm``), the detector
    with the highest AUROC, and whether its CI excludes 0.5 and its adjusted p is at most
    `level`. None when no detector has an AUROC."""
    valid = [k for k, v in per.items() if v.get("auroc") is not None]
    if not valid:
        return None
    for k, test in zip(valid, holm([per[k]["p_value"] for k in valid], level), strict=True):
        per[k]["p_holm"] = test["p_holm"]
    best = max(valid, key=lambda k: per[k]["auroc"])
    b = per[best]
    return {
        "detector": best,
        "auroc": b["auroc"],
        "ci_low": b["ci_low"],
        "ci_high": b["ci_high"],
        "p": b["p_value"],
        "p_holm": b["p_holm"],
        "p_min": b.get("p_min"),
        "n_tests": len(valid),
        "n_pos": b["n_pos"],
        "n_neg": b["n_neg"],
        "level": level,
        "separates": bool(b["ci_low"] > 0.5 and b["p_holm"] <= level),
    }


def _separation_text(sep: dict[str, Any]) -> str:
    """The adjusted p as the findings and the figure both print it."""
    return f"Holm p = {sep['p_holm']:.2g} over {sep['n_tests']} detectors"


def findings(sep: dict[str, Any], fpr: dict[str, Any], alpha: float) -> list[str]:
    """Sentences chosen from the numbers (never assumed): which detector separates which group,
    by the same corrected test as the figure (`separation`)."""
    out = []
    for group, b in sep.items():
        if group == "all" or not b:
            continue
        what = "library traits" if group == "library" else "held-out traits"
        out.append(
            f"{what}: best detector {b['detector']}, AUROC {b['auroc']:.2f} [{b['ci_low']:.2f}, "
            f"{b['ci_high']:.2f}], p = {b['p']:.2g} against chance (smallest attainable "
            f"{b['p_min']:.2g}; {_separation_text(b)}), over {b['n_pos']} biased vs "
            f"{b['n_neg']} unbiased datasets — "
            + ("separated from chance." if b["separates"] else "not told apart from chance.")
        )
    high = [k for k, v in fpr.items() if v["fpr"] is not None and v["fpr"] > 2 * alpha + 0.25]
    if high:
        out.append(
            f"calibration: {', '.join(high)} flagged more unbiased datasets than alpha {alpha} "
            "allows by a wide margin (check that data and reference are sampled alike)."
        )
    return out


def _title(results: dict[str, Any]) -> str:
    """The figure's title: per group, the verdict of `separation` (the findings' test)."""
    bits = []
    for group in GROUPS:
        b = results["separation"].get(group)
        if not b:
            continue
        verdict = "separates" if b["separates"] else "does not separate"
        bits.append(
            f"{group}: {b['detector']} {verdict} (AUROC {b['auroc']:.2f}, {_separation_text(b)})"
        )
    return f"Scanner on {results['model']['name']} — " + "; ".join(bits)


def _legend_label(k: str, a: dict[str, Any]) -> str:
    """A detector's ROC legend entry: AUROC [CI] and its Holm-adjusted p (as in the findings)."""
    return f"{k}: {ci_text(a['auroc'], a['ci_low'], a['ci_high'], 2)}, Holm p {a['p_holm']:.2g}"


def figure_text(results: dict[str, Any]) -> dict[str, Any]:
    """The figure's title and legend labels per group (what `write_figure` draws)."""
    labels = {
        group: {k: _legend_label(k, a) for k, a in per.items() if a["auroc"] is not None}
        for group, per in results["auroc"].items()
        if group in GROUPS
    }
    return {"title": _title(results), "labels": labels}


def write_figure(results: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()
    from sklearn.metrics import roc_curve

    groups = [g for g in GROUPS if g in results["auroc"]]
    if not groups:
        return []
    neg = [r for r in results["datasets"] if r["label"] == 0]
    text = figure_text(results)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.6), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        pos = [r for r in results["datasets"] if r["label"] == 1 and r["kind"] == group]
        sel = pos + neg
        labels = np.array([r["label"] for r in sel])
        for k, label in text["labels"][group].items():
            fpr, tpr, _ = roc_curve(labels, [r[k]["z"] for r in sel])
            color, ls, marker = STYLE[k]
            ax.plot(fpr, tpr, ls=ls, marker=marker, color=color, mfc="white", label=label)
        ax.plot([0, 1], [0, 1], color="0.8", lw=1)
        ax.set_xlabel(f"false-positive rate ({len(neg)} unbiased datasets)")
        ax.set_ylabel(f"true-positive rate ({len(pos)} biased datasets)")
        name = "library traits" if group == "library" else "held-out traits"
        ax.set_title(f"{name}: AUROC [95% CI], Holm-adjusted p", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(text["title"], fontsize=9)
    fig.tight_layout()
    return [save_png(fig, out / "roc.png")]


def upgrade(results: dict[str, Any]) -> dict[str, Any]:
    """Results of an older study read under today's rules (`sublens report` rewrites a study's
    report from its results.json): each p's smallest attainable value from the configured
    counts, the verdict as Holm over the primary detectors, and the summary (AUROC p-values,
    the corrected `separation`, findings) recomputed from the per-dataset records."""
    if "separation" in results:
        return results
    cfg = results["config"]
    alpha = float(cfg.get("alpha", 0.05))
    records = []
    for r in results["datasets"]:
        r = dict(r)
        primary = []
        for k in DETECTORS:
            if r.get(k) is None:
                continue
            count = cfg["n_blind_permutations"] if k == "blind" else cfg["n_permutations"]
            r[k] = {"p_min": 1.0 / (int(count) + 1), **r[k]}
            if k in ("known", "blind"):
                primary.append(r[k]["p"])
        r["verdict_flagged"] = any(t["rejected"] for t in holm(primary, alpha))
        records.append(r)
    summary = summarise(records, alpha, int(cfg.get("n_boot", 2000)), int(cfg.get("seed", 0)))
    return {**results, "datasets": records, **summary}


def _unreachable(cfg: dict[str, Any]) -> list[str]:
    """Warnings for scans whose permutation counts cannot reach the verdict's level (studies run
    before the counts were chosen from it)."""
    alpha = float(cfg.get("alpha", 0.05))
    level = alpha / (2 if cfg["traits"] else 1)
    out = []
    for what, key in (("known-trait", "n_permutations"), ("blind", "n_blind_permutations")):
        if what == "known-trait" and not cfg["traits"]:
            continue
        p_min = 1.0 / (int(cfg[key]) + 1)
        if p_min > level:
            out.append(
                f"the {what} detector ran with {cfg[key]} permutations: its smallest attainable "
                f"p ({p_min:.2g}) is above the verdict's level ({level:.3g}), so it could never "
                "flag a dataset; rerun with the default counts."
            )
    return out


def render_report(results: dict[str, Any]) -> str:
    results = upgrade(results)
    cfg = results["config"]
    lines = [
        f"# Scanner evaluation on {results['model']['name']} (layer {cfg['layer']})",
        "",
        f"Biased datasets: prompted teachers of {', '.join(cfg['traits']) or '–'} (library: a "
        f"diff-mean vector each) and {', '.join(cfg['heldout_traits']) or '–'} (held out: not in "
        f"the library), {cfg['seeds']} sampling seed(s) each; unbiased: the base model, "
        f"{cfg['unbiased_seeds']} seed(s). Every dataset answers the same {cfg['n_rows']} numbers "
        f"prompts with {cfg['max_new_tokens']} new tokens (grammar-constrained, T = 1); one "
        "reference (the base model, its own seed) serves every scan. Calibrated flags at "
        f"alpha {cfg['alpha']}; AUROC on each detector's z against its own permutation null, "
        f"95% CIs from {cfg['n_boot']} stratified bootstrap resamples of datasets.",
        "",
        "## Findings",
        "",
        *[f"- {s}" for s in [*results["findings"], *_unreachable(cfg)]],
        "",
        "## AUROC (biased vs unbiased datasets)",
        "",
        "| detector | " + " | ".join(results["auroc"]) + " |",
        "|---|" + "---|" * len(results["auroc"]),
    ]
    for k in DETECTORS:
        cells = []
        for per in results["auroc"].values():
            a = per.get(k)
            cells.append(
                "–"
                if not a or a["auroc"] is None
                else f"{ci_text(a['auroc'], a['ci_low'], a['ci_high'], 2)}, p {a['p_value']:.2g} "
                f"(Holm {a['p_holm']:.2g}; smallest attainable {a['p_min']:.2g})"
            )
        lines.append(f"| {DETECTOR_LABELS[k]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Calibrated thresholds: flag rates",
        "",
        "| detector | false-positive rate (unbiased) | "
        + " | ".join(f"true-positive rate ({g})" for g in results["true_positive_rate"])
        + " |",
        "|---|---|" + "---|" * len(results["true_positive_rate"]),
    ]
    for k in (*DETECTORS, "verdict"):
        f = results["false_positive_rate"].get(k)
        if f is None:
            continue
        cells = [
            _rate(results["true_positive_rate"][g].get(k), "tpr")
            for g in results["true_positive_rate"]
        ]
        label = DETECTOR_LABELS.get(k, "verdict (known or blind, Holm)")
        lines.append(f"| {label} | {_rate(f, 'fpr')} | " + " | ".join(cells) + " |")
    ident = results["identification"]
    if ident:
        lines += [
            "",
            f"Top library vector names the right trait in {ident['top_vector_is_trait']:.0%} of "
            f"{ident['n']} library-trait datasets.",
        ]
    lines += [
        "",
        "## Datasets",
        "",
        f"Scans: {cfg['n_permutations']} permutations (known, shift, likelihood) and "
        f"{cfg['n_blind_permutations']} (blind); each p is shown with its smallest attainable "
        "value.",
        "",
        "| dataset | kind | known z (p, min) | blind z (p, min) | shift z (p, min) | "
        "likelihood z (p, min) | verdict | top vector | û raises | cos(û, v_trait) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["datasets"]:
        cells = [
            "–" if r[k] is None else f"{r[k]['z']:.2f} ({r[k]['p']:.3g}, {r[k]['p_min']:.2g})"
            for k in DETECTORS
        ]
        toks = ", ".join(f"`{t!r}`" for t in r["blind_tokens"][:3])
        lines.append(
            f"| {r['name']} | {r['kind']} | " + " | ".join(cells) + f" | "
            f"{'flagged' if r['verdict_flagged'] else 'clean'} | {r['known_top'] or '–'} | "
            f"{toks or '–'} | {_f(r['cosine_u_true'], 2)} |"
        )
    lines += [
        "",
        "## How to read it",
        "",
        "- AUROC 0.5 is chance. Each cell: AUROC [bootstrap 95% CI], p = the share of label "
        "assignments (which datasets are 'biased') reaching that AUROC by chance. With a handful "
        "of datasets per group the bootstrap CI can collapse (one biased dataset: every "
        "resample has the same positive); the p-value (with its smallest attainable value) then "
        "says the evidence is thin. The best detector of a group counts as separating only when "
        f"its CI excludes 0.5 and its p, Holm-adjusted over the group's detectors, is at most "
        f"{cfg['alpha']} (the findings and the figure state the same adjusted p).",
        "- The false-positive rate should be near alpha; with few unbiased datasets (each "
        "flagged or not) it is coarse. Unbiased datasets share one reference, so their flags are "
        "not independent.",
        "- Held-out traits have no library vector: there only the blind statistics (and the "
        "known detector through whatever library vector happens to correlate) can work.",
        "",
        "## Figure",
        "",
        *figure_links(results),
        "",
        "ROC curves per detector; left library traits, right held-out traits, against the same "
        "unbiased datasets.",
        "",
        timings_line(results),
    ]
    return "\n".join(lines) + "\n"


def _rate(entry: dict[str, Any] | None, key: str) -> str:
    if not entry or entry.get(key) is None:
        return "–"
    return f"{entry[key]:.2f} ({round(entry[key] * entry['n'])}/{entry['n']})"

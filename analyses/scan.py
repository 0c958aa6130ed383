"""`sublens scan`: does a distillation dataset carry a hidden trait, which one, and which rows?

The practitioner has the dataset and the base model, no teacher. `interp.detect.scan` does the work
(derivatives of the data's likelihood under the base shifted at one layer, against the base
model's own answers to the same prompts); this module resolves the inputs, builds (and caches)
the reference, and writes:

- ``OUT/results.json``: config, versions, timings, the verdict, every detector's score,
  calibrated threshold and p-value, the suspected traits, the blind direction's rising tokens,
  the top rows; ``results["rows_path"]`` names the per-row file;
- ``OUT/rows.jsonl``: one line per scanned data row, ``{"index": i, "score": z, "known": z |
  null, "blind": z, "flagged": bool}`` (``index`` counts the dataset's non-empty lines from 0;
  ``flagged``: ``score`` above ``row_z``, default 2) — what a defense reads to drop rows;
- ``OUT/scores.png``: per-row scores of the data and of the reference rows;
- ``OUT/reference.jsonl`` (generated reference, resumable), ``OUT/report.md``.

A finished scan with the same config is read back, not rerun.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from analyses.figures import pyplot, save_png
from analyses.reporting import (
    default_output,
    figure_links,
    output_dir,
    provenance,
    timings_line,
)
from interp.core.errors import SublensError
from interp.core.io import (
    config_hash,
    read_json,
    read_json_dict,
    sha256_file,
    write_json,
    write_text,
)
from interp.detect.scan import (
    DETECTORS,
    check_rows,
    permutation_counts,
    read_dataset,
    reference_rows,
    scan_dataset,
)
from interp.vectors.steering import SteeringVector

from .studies import fmt as _f
from .studies import say_fn

DETECTOR_LABELS = {
    "known": "known trait (library vectors)",
    "blind": "blind (behavioural effect of û)",
    "shift": "gradient shift ‖u‖",
    "likelihood": "likelihood shift",
}


def load_vectors(paths: list[str | Path] | None) -> dict[str, SteeringVector]:
    """Library vectors by name (their directory's name; repeats get a suffix)."""
    out: dict[str, SteeringVector] = {}
    for p in paths or []:
        where = Path(p)
        vec = SteeringVector.load(where)
        name = (where.parent if where.is_file() else where).name or str(where)
        base, k = name, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out[name] = vec
    return out


def data_generation_settings(data: Path) -> dict[str, Any]:
    """How a sublens-generated dataset was sampled (its ``.meta.json`` sidecar), so the reference
    is sampled the same way: domain, token budget, temperature. Empty when unknown."""
    meta_path = data.with_name(data.name + ".meta.json")
    if not meta_path.is_file():
        return {}
    try:
        meta = read_json(meta_path)
        if meta.get("sha256") != sha256_file(data):
            return {}  # the file changed since it was generated: the sidecar does not describe it
        cfg = meta["config"]
        domain = str(cfg["domain"]).split("@", 1)[0]
        return {
            "domain": domain if cfg.get("constrained", True) and domain != "free" else None,
            "max_new_tokens": int(cfg["max_new_tokens"]),
            "temperature": float(cfg.get("temperature", 1.0)),
            "source": str(meta_path),
        }
    except (ValueError, KeyError, TypeError):
        return {}


def _preview(row: dict[str, Any], n: int = 80) -> str:
    text = row["messages"][-1]["content"].replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def run_scan(
    data: str | Path,
    model: str,
    output_path: str | Path | None = None,
    trait_vectors: list[str | Path] | None = None,
    reference: str | Path | None = None,
    layer: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 8,
    n_permutations: int | None = None,
    device: str = "auto",
    quiet: bool = False,
    *,
    n_blind_permutations: int | None = None,
    effect_scale: float = 0.5,
    alpha: float = 0.05,
    row_z: float = 2.0,
    max_new_tokens: int | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Scan `data` with `model` and write the run directory (see the module docstring).

    Permutation counts left None are chosen from the verdict's level; a count that cannot reach
    it is refused before the model loads (`interp.detect.scan.permutation_counts`)."""
    from interp.core.models import load_hash_view, load_model

    say = say_fn(quiet, "scan")
    t_all = time.perf_counter()
    data = Path(data)
    out = Path(output_path or default_output("scan", data.stem))
    rows = read_dataset(data)
    if limit is not None:
        if limit <= 0:
            raise SublensError(f"--limit must be positive, got {limit}")
        rows = rows[:limit]
    check_rows(rows, "data")
    vectors = load_vectors(trait_vectors)
    n_permutations, n_blind_permutations = permutation_counts(
        alpha, bool(vectors), n_permutations, n_blind_permutations
    )
    ref_given = read_dataset(reference) if reference is not None else None
    if ref_given is not None:
        check_rows(ref_given, "reference")
    if out.exists() and not out.is_dir():
        raise SublensError(f"output path {out} is a file: give a directory")
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if layer is None:
        layer = loaded.n_layers // 2
    elif layer < 0:
        layer += loaded.n_layers
    loaded.check_layers([layer])
    gen = {} if ref_given is not None else data_generation_settings(data)
    config = {
        "data": str(data),
        "data_sha256": sha256_file(data),
        "limit": limit,
        "model": model,
        "layer": layer,
        "trait_vectors": {k: str(p) for k, p in zip(vectors, trait_vectors or [], strict=True)},
        "reference": str(reference) if reference is not None else None,
        "reference_sha256": sha256_file(reference) if reference is not None else None,
        "reference_generation": None
        if ref_given is not None
        else {
            "seed": seed,
            "domain": gen.get("domain", "auto"),
            "max_new_tokens": max_new_tokens or gen.get("max_new_tokens"),
            "temperature": gen.get("temperature", 1.0),
            "settings_from": gen.get("source", "inferred from the data"),
        },
        "seed": seed,
        "batch_size": batch_size,
        "n_permutations": n_permutations,
        "n_blind_permutations": n_blind_permutations,
        "effect_scale": effect_scale,
        "alpha": alpha,
        "verdict_rule": "holm",  # results of the older Bonferroni rule are not reused
        "row_z": row_z,
        **load_hash_view({"dtype": dtype}),  # float32 scans keep their earlier keys
    }
    key = config_hash({**config, "vector_sha": _vector_digests(vectors)})
    # The directory belongs to one dataset and reference; other settings (vectors, layer,
    # permutations...) may be rescanned in place, reusing the reference.
    ref_key = config_hash(
        {k: config[k] for k in ("data_sha256", "limit", "model", "reference_sha256")}
        | {"reference_generation": config["reference_generation"]}
        | load_hash_view({"dtype": dtype})
    )
    cfg_file = out / "config.json"
    try:
        output_dir(out, "scan", key=ref_key, field="reference_hash")
    except SublensError as err:
        if "another config" in str(err):
            raise SublensError(
                f"{out} holds a scan of other data (or another model or reference): pick another "
                "--output-path"
            ) from None
        raise
    res_file = out / "results.json"
    if res_file.is_file() and read_json_dict(res_file).get("config_hash") == key:
        say(f"{res_file} is already complete for this config: reusing it")
        return read_json(res_file)
    res_file.unlink(missing_ok=True)  # a rescan: no stale results while rows are rewritten
    write_json(cfg_file, {"hash": key, "reference_hash": ref_key, "config": config})

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if ref_given is not None:
        ref_rows = ref_given
    else:
        rg = config["reference_generation"]
        say(
            f"reference: the base model answers the {len(rows)} prompts (domain {rg['domain']}, "
            f"{rg['max_new_tokens'] or 'longest-response'} new tokens) ..."
        )
        ref_rows = reference_rows(
            loaded,
            rows,
            seed,
            domain=rg["domain"],
            max_new_tokens=rg["max_new_tokens"],
            temperature=rg["temperature"],
            path=out / "reference.jsonl",
            quiet=quiet,
        )
    timings["reference_s"] = round(time.perf_counter() - t0, 1)
    scan = scan_dataset(
        loaded,
        rows,
        ref_rows,
        vectors,
        layer,
        alpha=alpha,
        n_permutations=n_permutations,
        n_blind_permutations=n_blind_permutations,
        effect_scale=effect_scale,
        row_z=row_z,
        seed=seed,
        batch_size=batch_size,
        progress=say,
        quiet=quiet,
    )
    timings.update({f"scan_{k}": v for k, v in scan["timings"].items()})

    rows_path = out / "rows.jsonl"
    r = scan["rows"]
    lines = [
        json.dumps(
            {
                "index": i,
                "score": r["score"][i],
                "known": None if r["known"] is None else r["known"][i],
                "blind": r["blind"][i],
                "flagged": bool(r["flagged"][i]),
            }
        )
        for i in range(len(rows))
    ]
    write_text(rows_path, "\n".join(lines) + "\n")
    order = np.argsort(-np.asarray(r["score"]), kind="stable")
    top_rows = [
        {
            "index": int(i),
            "score": r["score"][i],
            "known": None if r["known"] is None else r["known"][i],
            "blind": r["blind"][i],
            "flagged": bool(r["flagged"][i]),
            "response": _preview(rows[i]),
        }
        for i in order[:10]
    ]
    results = {
        "analysis": "scan",
        "config": config,
        "config_hash": key,
        "model": loaded.describe(),
        "output_path": str(out),
        "rows_path": str(rows_path),
        "reference_path": str(reference) if reference is not None else str(out / "reference.jsonl"),
        "verdict": scan["verdict"],
        "detectors": scan["detectors"],
        "suspected_traits": scan["suspected_traits"],
        "suspected_tokens": scan["detectors"]["blind"]["suspected_tokens"],
        "top_rows": top_rows,
        "n_rows": len(rows),
        "n_reference_rows": len(ref_rows),
        "paired": scan["paired"],
        "n_flagged_rows": scan["n_flagged_rows"],
        "n_flagged_reference_rows": scan["n_flagged_reference_rows"],
        "scores": {"data": r["score"], "reference": scan["reference_rows"]["score"]},
        "settings": scan["settings"],
        "vectors": scan["vectors"],
        **provenance(),
    }
    results["figures"] = write_figure(results, out)
    timings["total_s"] = round(time.perf_counter() - t_all, 1)
    results["timings"] = timings
    write_text(out / "report.md", render_report(results))
    write_json(res_file, results)  # last: a results.json means the scan is complete
    return results


def _vector_digests(vectors: dict[str, SteeringVector]) -> dict[str, str]:
    from interp.distill.teachers import vector_sha256

    return {k: vector_sha256(v) for k, v in vectors.items()}


def claim(results: dict[str, Any]) -> str:
    """The figure's title: what the scan concluded, in one line."""
    v = results["verdict"]
    d = results["detectors"]
    bits = []
    if d.get("known"):
        bits.append(f"known {_p_text(d['known'])}, top {d['known']['top']}")
    bits.append(f"blind {_p_text(d['blind'])}")
    head = "Hidden trait suspected" if v["flagged"] else "No hidden trait detected"
    return f"{head} ({'; '.join(bits)})"


def _p_text(d: dict[str, Any]) -> str:
    """A detector's p with its smallest attainable value (a p at its floor says "more
    permutations would resolve it further", not "p is that small")."""
    return f"p={d['p_value']:.2g} (min {d['p_min']:.2g})"


def write_figure(results: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()
    data = np.asarray(results["scores"]["data"])
    ref = np.asarray(results["scores"]["reference"])
    z = results["settings"]["row_z"]
    lo = min(data.min(), ref.min(), -3.0)
    hi = max(data.max(), ref.max(), z + 1.0)
    bins = np.linspace(lo, hi, 31)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(ref, bins=bins, color="0.8", edgecolor="0.5", label=f"reference ({ref.size} rows)")
    ax.hist(
        data,
        bins=bins,
        histtype="step",
        hatch="///",
        color="black",
        lw=1.5,
        label=f"data ({data.size} rows)",
    )
    ax.axvline(z, color="black", ls="--", lw=1)
    ax.annotate(
        f"flag: z > {z:g} ({results['n_flagged_rows']} data rows)",
        (z, ax.get_ylim()[1] * 0.9),
        xytext=(4, 0),
        textcoords="offset points",
        fontsize=8,
    )
    ax.set_xlabel("per-row suspicion score (z against the base model's own answers)")
    ax.set_ylabel("rows")
    ax.set_title(claim(results), fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return [save_png(fig, out / "scores.png")]


def render_report(results: dict[str, Any]) -> str:
    cfg = results["config"]
    d = results["detectors"]
    s = results["settings"]
    libs = ", ".join(f"{v['name']} (L{v['layer']})" for v in results["vectors"])
    pairing = (
        "the base model's own answers to the same prompts, paired by prompt"
        if results["paired"]
        else "unpaired: other prompts or another order"
    )
    lines = [
        f"# Scan of `{cfg['data']}` with {results['model']['name']} (layer {cfg['layer']})",
        "",
        f"**{results['verdict']['sentence']}**",
        "",
        f"{results['n_rows']} data rows against {results['n_reference_rows']} reference rows "
        f"({pairing}); reference: `{results['reference_path']}`. Library vectors: "
        f"{libs or 'none (blind only)'}.",
        "",
        "## Detectors",
        "",
        f"Each score is compared with its permutation null (data/reference labels swapped); the "
        f"threshold is the null's {1 - s['alpha']:.0%} quantile. The verdict uses the known and "
        f"blind detectors, Holm-corrected at family level {s['alpha']:.3g} (the smallest p must "
        f"be at most {results['verdict']['level']:.3g}); shift and likelihood are reported "
        f"alongside at {s['alpha']:.3g}. Permutation counts are chosen so that the smallest "
        "attainable p is at most a quarter of the level each test must reach.",
        "",
        "| detector | score | threshold | p | Holm p | smallest attainable p | level | flagged | "
        "z vs null | permutations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in DETECTORS:
        e = d.get(k)
        if not e:
            lines.append(
                f"| {DETECTOR_LABELS[k]} | – | – | – | – | – | – | – | – | (no library vectors) |"
            )
            continue
        reach = "" if e["reachable"] else " (cannot reach it)"
        lines.append(
            f"| {DETECTOR_LABELS[k]} | {_f(e['score'])} | {_f(e['threshold'])} | "
            f"{_f(e['p_value'])} | {_f(e.get('p_holm'))} | {_f(e['p_min'])} | "
            f"{_f(e['level'])}{reach} | {'**yes**' if e['flagged'] else 'no'} | {_f(e['z'])} | "
            f"{e['n_permutations']} |"
        )
    if d.get("known"):
        lines += [
            "",
            "## Suspected traits (library vectors, by t)",
            "",
            f"Marginal p per vector: not corrected over vectors; smallest attainable "
            f"{_f(d['known']['p_min'])}.",
            "",
            "| vector | layer | t | marginal p | mean derivative data | reference |",
            "|---|---|---|---|---|---|",
        ]
        for e in d["known"]["per_vector"]:
            lines.append(
                f"| {e['name']} | {e['layer']} | {_f(e['t'])} | {_f(e['p_marginal'])} | "
                f"{_f(e['mean_data'])} | {_f(e['mean_reference'])} |"
            )
    b = d["blind"]
    u = b["directions"]["u"]
    lines += [
        "",
        "## Blind direction û",
        "",
        f"û = mean per-token gradient of the data minus the reference at layer {cfg['layer']} "
        f"(‖u‖ = {_f(u['norm'])}). Shifting the base by s·û (s = {_f(b['s'])}, "
        f"{b['effect_scale']:g} × the median residual norm {_f(b['residual_scale'])}) changes the "
        f"answer distribution of {b['n_questions']} fixed questions by mean KL {_f(u['effect'])} "
        f"(null {_f(b['null_mean'])} ± {_f(b['null_sd'])}). By question group: "
        + ", ".join(f"{k} {_f(v)}" for k, v in u["effect_by_group"].items())
        + ".",
        "",
        "Answer tokens whose probability rises most under +s·û (log ratio, shifted probability):",
        "",
    ]
    for group, toks in u["rising_tokens"].items():
        shown = ", ".join(
            f"`{t['token']!r}` ({t['log_lift']:+.2f}, {t['p_shifted']:.3f})" for t in toks[:6]
        )
        lines.append(f"- {group}: {shown or '–'}")
    if u["cosines"]:
        lines += [
            "",
            "Cosine of û with the library vectors: "
            + ", ".join(f"{k} {v:+.3f}" for k, v in u["cosines"].items())
            + ".",
        ]
    pcs = {k: v for k, v in b["directions"].items() if k != "u"}
    if pcs:
        lines += [
            "",
            "Principal directions of the data's gradients (centred on the reference mean); no "
            "p-value of their own (their effect is compared with û's null):",
            "",
            "| direction | effect | z vs û null | share of variance | cos with û | rising tokens |",
            "|---|---|---|---|---|---|",
        ]
        for k, e in pcs.items():
            toks = ", ".join(f"`{t['token']!r}`" for t in e["rising_tokens"]["all"][:4])
            lines.append(
                f"| {k} | {_f(e['effect'])} | {_f(e['z_vs_u_null'])} | {_f(e['explained'])} | "
                f"{e['cosine_with_u']:+.2f} | {toks or '–'} |"
            )
    lines += [
        "",
        "## Rows",
        "",
        f"{results['n_flagged_rows']} of {results['n_rows']} data rows score above z = "
        f"{s['row_z']:g} ({results['n_flagged_reference_rows']} of "
        f"{results['n_reference_rows']} reference rows do). Per-row scores: "
        f"`{results['rows_path']}`.",
        "",
        "| row | score | known z | blind z | flagged | response |",
        "|---|---|---|---|---|---|",
    ]
    for e in results["top_rows"]:
        resp = e["response"].replace("|", "\\|")
        lines.append(
            f"| {e['index']} | {_f(e['score'])} | {_f(e['known'])} | {_f(e['blind'])} | "
            f"{'yes' if e['flagged'] else 'no'} | `{resp}` |"
        )
    lines += [
        "",
        "## How to read it",
        "",
        "- A trait shows as data that the base model finds *more likely when its residual stream "
        "is shifted towards the trait*: a positive derivative along a library vector (known), or "
        "a data-minus-reference gradient û that, applied to the base, changes its answers more "
        "than the same construction on shuffled labels (blind).",
        "- p-values come from permutations of data/reference labels, so they hold whatever the "
        "model; the smallest reachable p is 1/(permutations + 1) (or 1 over the number of "
        "distinct labellings, with few rows), shown next to every p. A count that cannot reach "
        "the level is refused; a dataset too small to reach it is said so in the verdict.",
        "- The rising tokens name what û pushes the base towards (e.g. an animal); they are a "
        "hint, strongest when the blind detector is flagged.",
        "- Row scores are z-scores against the reference rows (mean 0, sd 1 there); û is "
        "re-estimated without each row's own prompt, so a data row is not scored by a direction "
        "fitted to itself. Dropping flagged rows removes the rows that carry most of the shift, "
        "not necessarily all of it.",
        "- The reference must be sampled like the data (same prompts, domain, token budget, "
        "temperature): a different cap or temperature is itself a difference every detector "
        "sees. Generated datasets carry these settings in their `.meta.json`; otherwise pass "
        "`--max-new-tokens` or your own `--reference`.",
        "",
        "## Figure",
        "",
        *figure_links(results),
        "",
        "Per-row suspicion scores of the data (hatched) and of the reference rows (grey).",
        "",
        timings_line(results),
    ]
    return "\n".join(lines) + "\n"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What `sublens scan` prints: the verdict, each detector, and how many rows were flagged."""
    lines = [results["verdict"]["sentence"]]
    for k, d in results["detectors"].items():
        if d:
            lines.append(
                f"  {DETECTOR_LABELS[k]}: score {d['score']:.4g} threshold {d['threshold']:.4g} "
                f"p {d['p_value']:.3g} (smallest attainable {d['p_min']:.2g}, "
                f"{d['n_permutations']} permutations){'  FLAGGED' if d['flagged'] else ''}"
            )
    lines.append(
        f"{results['n_flagged_rows']} of {results['n_rows']} rows flagged; per-row scores: "
        f"{results['rows_path']}"
    )
    return lines

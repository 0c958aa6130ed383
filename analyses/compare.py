"""One table across architectures: the same study run on several models, side by side.

Reads the ``results.json`` of finished study directories (transfer-ratio sweeps, optimizer
ablations, toy runs, single distillation runs, `sublens defend` studies) and lines them up by
model, so "does the trait transfer on Llama *and* on Gemma 3, with the same shape?" (or "does the
same defense work on both?") is one table. Nothing is recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from analyses.figures import ci_text, fmt_num, pyplot, save_png
from analyses.reporting import output_dir, provenance
from interp.core.errors import SublensError
from interp.core.io import read_json, write_json, write_text

from .studies import fmt, fmt_ci


def _load(run: str | Path) -> dict[str, Any]:
    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise SublensError(f"{run} has no results.json: give a finished study directory")
    try:
        res = read_json(path)
    except json.JSONDecodeError as err:
        raise SublensError(f"{path} is not valid JSON ({err.msg}): rerun the study") from None
    if not isinstance(res, dict) or "analysis" not in res:
        raise SublensError(f"{path} is not a sublens results file (no 'analysis' key)")
    res.setdefault("run", str(path.parent))
    return res


def _model(res: dict[str, Any]) -> str:
    m = res.get("model")
    if isinstance(m, dict):
        return str(m.get("name") or m.get("model") or m)
    return str(m or (res.get("config") or {}).get("model", "?"))


def _row(res: dict[str, Any]) -> dict[str, Any]:
    """The comparable numbers of one study, whatever its kind."""
    kind = res["analysis"]
    row: dict[str, Any] = {"run": res["run"], "analysis": kind, "model": _model(res)}
    if kind == "transfer-ratio":
        thr = res["threshold"]["transfer_ratio"]
        row.update(
            trait=res["trait"],
            verdict=thr["verdict"],
            sentence=thr["sentence"],
            maximum=thr["maximum"],
            midpoint=(thr["fit"].get("fits") or {})
            .get("logistic", {})
            .get("params", {})
            .get("mid"),
            midpoint_ci=thr["bootstrap"]["mid_ci"],
            gain_verdict=res["threshold"]["student_minus_control"]["verdict"],
            alpha0_verdict=(res["threshold"].get("student_minus_alpha0") or {}).get("verdict"),
            per_alpha={
                f"{p['alpha']:g}": {
                    "transfer_ratio": p["transfer_ratio"],
                    "student_minus_control": p["student_minus_control"],
                    "tau_teacher": p["tau_teacher"],
                }
                for p in res["points"]
            },
        )
    elif kind == "optimizers":
        row.update(
            trait=res["trait"],
            per_optimizer={
                n: {
                    "transfer_ratio": r["transfer_ratio"],
                    "student_minus_control": r["student_minus_control"],
                    "final_loss": r["final_loss"]["mean"],
                    "loss_matched": r["loss_matched"],
                    "alignment": (r.get("alignment") or {}).get("cosine"),
                }
                for n, r in res["optimizers"].items()
            },
        )
    elif kind == "distill":
        h = res["headline"]
        row.update(
            trait=res["trait"],
            transfer_ratio=h.get("transfer_ratio_student"),
            student_minus_control=h.get("student_minus_control"),
        )
    elif kind == "toy":
        row.update(model="toy MLP", summary=res.get("summary_line"))
    elif kind == "defend":
        row.update(
            trait=res["trait"],
            recommendation=res["recommendation"],
            per_defense={
                n: (
                    {
                        "available": True,
                        "transfer_ratio": d["transfer_ratio"],
                        "student_minus_control": d.get("student_minus_control"),
                        "gain_reduction": d.get("gain_reduction"),
                        "gain_reduction_p_holm": d.get("gain_reduction_p_holm"),
                        "effective": d.get("effective"),
                        "task_cost": d["task_cost"],
                        "ppl_cost": d["ppl_cost"],
                    }
                    if d.get("available")
                    else {"available": False, "note": d.get("note")}
                )
                for n, d in ((n, res["defenses"][n]) for n in res["order"])
            },
        )
    return row


def run_compare(runs: list[str | Path], output_path: str | Path | None = None) -> dict[str, Any]:
    """Combine finished studies into OUT/results.json, OUT/report.md and (for transfer-ratio
    sweeps) OUT/compare_transfer_ratio.png."""
    if len(runs) < 1:
        raise SublensError("give at least one study directory to compare")
    rows = [_row(_load(r)) for r in runs]
    out = output_dir(output_path, "compare", kind="study-compare")
    results: dict[str, Any] = {
        "analysis": "compare",
        "config": {"runs": [str(r) for r in runs]},
        "rows": rows,
        **provenance(),
    }
    results["figures"] = _figure(runs, rows, out)
    write_text(out / "report.md", render_report(results))
    write_json(out / "results.json", results)
    return results


def _figure(runs: list[str | Path], rows: list[dict[str, Any]], out: Path) -> list[str]:
    sweeps = [r for r in rows if r["analysis"] == "transfer-ratio"]
    if not sweeps:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    markers, styles = "osD^v", ["-", "--", ":", "-."]
    for i, r in enumerate(sweeps):
        pts = [(float(a), d["transfer_ratio"]) for a, d in r["per_alpha"].items()]
        pts = [(a, d) for a, d in pts if d["value"] is not None]
        if not pts:
            continue
        xs = np.array([a for a, _ in pts])
        ys = np.array([d["value"] for _, d in pts])
        lo = np.array([d["ci_low"] if d["ci_low"] is not None else np.nan for _, d in pts])
        hi = np.array([d["ci_high"] if d["ci_high"] is not None else np.nan for _, d in pts])
        ax.errorbar(
            xs,
            ys,
            yerr=[np.nan_to_num(ys - lo), np.nan_to_num(hi - ys)],
            fmt=markers[i % 5] + styles[i % 4],
            color=str(0.6 * i / max(1, len(sweeps) - 1)),
            mfc="white",
            capsize=3,
            label=f"{r['model']} ({r['verdict']})",
        )
    ax.axhline(0, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("steering strength alpha")
    ax.set_ylabel("transfer ratio (95% CI)")
    verdicts = {r["verdict"] for r in sweeps}
    ax.set_title(
        f"Same curve shape on every model: {next(iter(verdicts))}"
        if len(verdicts) == 1
        else "The curve's shape differs between models",
        fontsize=10,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return [save_png(fig, out / "compare_transfer_ratio.png")]


def render_report(results: dict[str, Any]) -> str:
    rows = results["rows"]
    lines = ["# Studies compared across models", ""]
    sweeps = [r for r in rows if r["analysis"] == "transfer-ratio"]
    if sweeps:
        alphas = sorted({a for r in sweeps for a in r["per_alpha"]}, key=float)
        lines += [
            "## Transfer ratio vs steering strength",
            "",
            "| model | trait | verdict | student − control | student − α=0 student | "
            "max ratio [95% CI] | logistic midpoint [CI] | "
            + " | ".join(f"ratio α={a}" for a in alphas)
            + " |",
            "|---|---|---|---|---|---|---|" + "---|" * len(alphas),
        ]
        for r in sweeps:
            m = r["maximum"]
            mx = ci_text(m["value"], m["ci_low"], m["ci_high"], 3, "g") if m else "–"
            mid_ci = r["midpoint_ci"] or [None, None]
            mid = (
                ci_text(r["midpoint"], mid_ci[0], mid_ci[1], 3, "g")
                if r["verdict"] == "sharp threshold"
                else "–"
            )
            cells = [
                fmt_ci(r["per_alpha"][a]["transfer_ratio"]) if a in r["per_alpha"] else "–"
                for a in alphas
            ]
            lines.append(
                f"| {r['model']} | {r['trait']} | {r['verdict']} | {r['gain_verdict']} | "
                f"{r.get('alpha0_verdict') or '–'} | {mx} | {mid} | " + " | ".join(cells) + " |"
            )
        lines += ["", *[f"- {r['model']}: {r['sentence']}" for r in sweeps], ""]
    opts = [r for r in rows if r["analysis"] == "optimizers"]
    if opts:
        names = list(dict.fromkeys(n for r in opts for n in r["per_optimizer"]))
        lines += [
            "## Optimizer ablation",
            "",
            "| optimizer | " + " | ".join(f"{r['model']}: ratio / loss" for r in opts) + " |",
            "|---|" + "---|" * len(opts),
        ]
        for n in names:
            cells = []
            for r in opts:
                d = r["per_optimizer"].get(n)
                cells.append(
                    "–"
                    if d is None
                    else f"{fmt_ci(d['transfer_ratio'])} / {fmt(d['final_loss'], 4)}"
                    + ("" if d["loss_matched"] else " (loss not matched)")
                )
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _defend_section([r for r in rows if r["analysis"] == "defend"])
    others = [r for r in rows if r["analysis"] not in ("transfer-ratio", "optimizers", "defend")]
    if others:
        lines += ["## Other runs", ""]
        for r in others:
            if r["analysis"] == "distill":
                lines.append(
                    f"- {r['model']} ({r['run']}): transfer ratio "
                    f"{fmt_ci(_as_value(r.get('transfer_ratio'), 'ratio'))}, τS − τC "
                    f"{fmt_ci(_as_value(r.get('student_minus_control'), 'diff'))}"
                )
            else:
                lines.append(f"- {r['analysis']} ({r['run']}): {r.get('summary', '')}")
        lines.append("")
    lines += ["Sources: " + ", ".join(f"`{r['run']}`" for r in rows), ""]
    lines += [f"![{f}]({f})" for f in results.get("figures", [])]
    return "\n".join(lines) + "\n"


def _defend_section(runs: list[dict[str, Any]]) -> list[str]:
    """Defenses × models: the student's gain beyond its control, its reduction vs none (what
    `sublens defend` ranks on, Holm across defenses) and the two costs per cell."""
    if not runs:
        return []
    names = list(dict.fromkeys(n for r in runs for n in r["per_defense"]))
    lines = [
        "## Defenses (`sublens defend`)",
        "",
        "| defense | "
        + " | ".join(
            f"{r['model']} ({r['trait']}): τS − τC / its reduction (Holm p) / task, ppl cost"
            for r in runs
        )
        + " |",
        "|---|" + "---|" * len(runs),
    ]
    for n in names:
        cells = []
        for r in runs:
            d = r["per_defense"].get(n)
            if d is None:
                cells.append("–")
            elif not d["available"]:
                cells.append("not available")
            else:
                red = "—" if n == "none" else _reduction(d)
                tc, pc = d["task_cost"], d["ppl_cost"]
                cost = "—" if n == "none" else f"{fmt_num(tc, 1, '+%')}, {fmt_num(pc, 1, '+%')}"
                cells.append(f"{fmt_ci(d.get('student_minus_control'))} / {red} / {cost}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- {r['model']}: {r['recommendation']}" for r in runs], ""]
    return lines


def _reduction(d: dict[str, Any]) -> str:
    """A defense's reduction of the gain beyond the control with its Holm p ("–" for a study
    written before defend ranked on it)."""
    if d.get("gain_reduction") is None:
        return "–"
    mark = ", effective" if d.get("effective") else ""
    return f"{fmt_ci(d['gain_reduction'])} (Holm p={fmt(d.get('gain_reduction_p_holm'), 2)}{mark})"


def _as_value(d: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not d:
        return None
    return {"value": d.get(key), "ci_low": d.get("ci_low"), "ci_high": d.get("ci_high")}

"""`sublens report RUN`: one report.md for a distillation run and its mechanism analyses.

Assembles, from whatever exists: the distillation's own report (`analyses.distill`: trait
scores, transfer ratio, its figure), the alignment analysis (`analyses.align`), the probes
(`analyses.probe`), found under RUN/align and RUN/probe or wherever RUN/analyses.json says they
were written, and the harmful-compliance evaluation (`analyses.compliance`, RUN/compliance).
A headline table comes first; every part that is missing is named with the command that makes
it, so a partial run still gets a report. Writes RUN/report.md (replacing
the distillation-only report that `sublens distill run` writes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analyses.figures import ci_of
from analyses.reporting import HEADLINE_HEADER
from analyses.runs import find_analysis, load_run, missing_lines
from interp.core.io import read_json, write_text
from interp.measure.verdicts import ONE_SEED_NOTE


def _demote(markdown: str, by: int = 1) -> str:
    """Push every heading down `by` levels, so a standalone report nests as a section."""
    return "\n".join(
        ("#" * by + line) if line.startswith("#") else line for line in markdown.splitlines()
    )


def _prefix(run: Path, out: Path) -> str:
    rel = os.path.relpath(out.resolve(), run.resolve())
    return "" if rel == "." else rel.replace(os.sep, "/") + "/"


def _distill_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Headline rows of a run: the ratio only over a resolved teacher gain, student − control in
    `transfer_word`'s words (a run is one training seed: never "transferred"), and the note."""
    from analyses.distill import gain_verdict, ratio_entry

    h = results["headline"]
    rows = []
    if "transfer_ratio_student" in h:
        r = ratio_entry(h, "transfer_ratio_student")
        rows.append(
            (
                "transfer ratio (student)",
                ci_of(r, "ratio", 3, "auto") if r["defined"] else r["undefined"],
                "share of the teacher's trait gain the student shows (0 none, 1 all)",
            )
        )
    if "student_minus_control" in h:
        d = h["student_minus_control"]
        rows.append(("tau(S) − tau(C)", ci_of(d, "diff", 4, "auto"), gain_verdict(d, 1)))
    if rows:
        rows.append(("training seeds", "1", ONE_SEED_NOTE))
    return rows


def _pick(rows: list[tuple[str, str, str]], *needles: str) -> list[tuple[str, str, str]]:
    return [r for r in rows if any(n in r[0] for n in needles)]


def _is_compliance_trait(trait: Any) -> bool:
    """Whether the run's trait is a harmful-compliance trait (then its evaluation is expected)."""
    from interp.core.errors import SublensError
    from interp.measure.traits import get_trait

    try:
        return get_trait(str(trait)).category == "harmful-compliance"
    except SublensError:
        return False


def _compliance_rows(path: Path) -> list[tuple[str, str, str]]:
    """Headline rows of `sublens eval compliance`: the student's transfer ratio per scorer (shown
    only over a resolved teacher gain, `analyses.studies.gate_ratio`)."""
    from analyses.studies import fmt_ci, gate_ratio

    if not path.is_file():
        return []
    res = read_json(path)
    point = res["points"][0]
    return [
        (
            f"compliance transfer ratio ({scorer})",
            fmt_ci(
                gate_ratio(
                    point["ratios"][scorer]["transfer_ratio"],
                    point["ratios"][scorer]["teacher_gain"],
                )
            ),
            "harmful compliance the student took from the teacher, by this scorer",
        )
        for scorer in res["scorers"]
    ]


# study kind (results.json "analysis") -> module and its report renderer
STUDY_REPORTS = {
    "transfer-ratio": ("analyses.transfer_ratio", "render_report"),
    "optimizers": ("analyses.optimizer_ablation", "render_report"),
    "toy": ("analyses.toy", "render_report"),
    "scan_eval": ("analyses.scan_eval", "render_report"),
    "defend": ("analyses.defend", "render_report"),
    "compare": ("analyses.compare", "render_report"),
    "positive-control": ("analyses.positive_control", "render_report"),
    "approximability-transfer": ("analyses.approx_transfer", "render_report"),
}


def study_report(study_dir: str | Path) -> Path | None:
    """Rewrite DIR/report.md of a study (transfer-ratio, optimizers, toy, scanner evaluation,
    defend, compare) from its results.json; None when DIR is not a study."""
    import importlib

    path = Path(study_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        res = read_json(path)
    except ValueError:
        return None
    kind = res.get("analysis") if isinstance(res, dict) else None
    if kind not in STUDY_REPORTS:
        return None
    module, fn = STUDY_REPORTS[kind]
    out = Path(study_dir) / "report.md"
    write_text(out, getattr(importlib.import_module(module), fn)(res))
    return out


def build_report(run_dir: str | Path) -> Path:
    """Write RUN/report.md from every analysis present; say what is missing. Returns its path.
    A study directory gets its own report rewritten instead."""
    study = study_report(run_dir)
    if study is not None:
        return study
    info = load_run(run_dir)
    run = info.path
    missing = missing_lines(info)
    headline: list[tuple[str, str, str]] = []
    sections: list[str] = []

    res_path = run / "results.json"
    if res_path.is_file():
        from analyses.distill import render_report, write_figures

        results = read_json(res_path)
        figures = write_figures(results, run)
        sections.append(_demote(render_report(results, figures)))
        headline += _distill_rows(results)
    else:
        missing.append(
            "distillation results (RUN/results.json): training or evaluation has not finished; "
            "rerun `sublens distill run` with the same config (it resumes)"
        )

    align_dir = find_analysis(run, "align")
    if align_dir is not None:
        from analyses import align

        res = read_json(align_dir / "results.json")
        sections.append(align.render_section(res, _prefix(run, align_dir), level=2))
        rows = align.headline_rows(res)
        headline += _pick(rows, "projection on v̂ student − control", "ḡ_teacher")
        headline += _pick(rows, "sufficiency_student", "necessity_student")
        headline += _pick(rows, "sufficiency_teacher", "necessity_teacher")
        missing += [f"align: {m}" for m in res.get("missing", []) if m not in missing]
    else:
        missing.append(
            f"alignment analysis: run `sublens align --run {run} --vectors VECTOR_DIR --layers all`"
        )

    probe_dir = find_analysis(run, "probe")
    if probe_dir is not None:
        from analyses import probe

        res = read_json(probe_dir / "results.json")
        sections.append(probe.render_section(res, _prefix(run, probe_dir), level=2))
        if res["probes"]:
            best = max(res["probes"], key=lambda k: res["probes"][k]["auroc"])
            headline += _pick(probe.headline_rows(res), f"AUROC L{best} ", f", L{best}")
        missing += [f"probe: {m}" for m in res.get("missing", []) if m not in missing]
    else:
        missing.append(f"probes: run `sublens probe --run {run} --layers 6,12,18`")

    compliance = run / "compliance" / "report.md"
    if compliance.is_file():
        sections.append(_demote(compliance.read_text()))
        headline += _compliance_rows(run / "compliance" / "results.json")
    elif _is_compliance_trait(info.config.get("trait")):
        missing.append(f"harmful compliance: run `sublens eval compliance {run}`")

    from analyses.defend import find_defend

    defend_dir = find_defend(run)  # `sublens defend ... --output-path RUN/defend`
    if defend_dir is not None:
        from analyses import defend

        res = read_json(defend_dir / "results.json")
        sections.append(_demote(defend.render_report(res, _prefix(run, defend_dir))))
        headline.append(
            ("defenses", res["recommendation"], "from `sublens defend`: reduction and cost")
        )

    cfg = info.config
    lines = [
        f"# Subliminal learning run — {cfg['trait']} on {cfg['model']}",
        "",
        f"Run directory `{run}`; teacher {cfg.get('teacher', {}).get('kind')}, seed "
        f"{cfg.get('seed')}. Checkpoints: student "
        f"{[s for s, _ in info.checkpoints['student']] or 'none'}, control "
        f"{[s for s, _ in info.checkpoints['control']] or 'none'}.",
        "",
        "## Headline numbers",
        "",
    ]
    if headline:
        lines += HEADLINE_HEADER
        lines += [f"| {a} | {b} | {c} |" for a, b, c in headline]
    else:
        lines.append("No analysis has finished yet: see what is missing below.")
    lines += ["", "## What is missing", ""]
    lines += [f"- {m}" for m in missing] if missing else ["Nothing: every part ran."]
    lines.append("")
    text = "\n".join(lines) + "\n" + "\n".join(s.rstrip() + "\n" for s in sections)
    path = run / "report.md"
    write_text(path, text)
    return path

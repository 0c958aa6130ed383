"""Issue #15 items 2 and 4 on planted numbers (no model): a ratio is shown only over a resolved
denominator (distill run, its report and CLI summary, `sublens report`, optimizer ablation,
compliance), and one training seed is always said and never called "transferred"; the study
bootstrap resamples seeds, then questions."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import tiny_run_toml

from interp.distill.run import load_run_config, summarise
from interp.measure.traits import get_trait
from interp.measure.verdicts import ONE_SEED_NOTE

UNDEFINED = "undefined: teacher gain not resolved"
Q = 40


def _score(per_question: np.ndarray) -> dict[str, Any]:
    v = [float(x) for x in per_question]
    return {"mean": float(np.mean(v)), "ci_low": min(v), "ci_high": max(v), "per_question": v}


def _model(per_question: np.ndarray) -> dict[str, Any]:
    s = _score(per_question)
    return {"trait": s, "negative": s, "offtopic": s}


def _planted(teacher_gain: float, student_gain: float, noise: float = 0.05, seed: int = 0):
    """Per-question scores: base ~0.3; the teacher adds exactly `teacher_gain` on average, spread
    by `noise` per question (a gain well below noise / sqrt(Q) has a CI straddling 0); the
    student adds `student_gain`, the control nothing (each with a little noise of its own)."""
    rng = np.random.default_rng(seed)
    base = 0.3 + rng.uniform(-0.05, 0.05, Q)
    spread = rng.normal(0, noise, Q)
    teacher = base + teacher_gain + spread - spread.mean()  # the mean gain is `teacher_gain`
    student = base + student_gain + rng.normal(0, 0.002, Q)
    control = base + rng.normal(0, 0.002, Q)
    return base, teacher, student, control


def _run_results(tmp_path: Path, teacher_gain: float, student_gain: float, **kw) -> dict:
    """results.json of a one-seed run with planted scores, as `run_distillation` builds it."""
    (tmp_path / "run.toml").write_text(tiny_run_toml(objective="sft"))
    cfg = load_run_config(tmp_path / "run.toml", {"output_path": str(tmp_path / "run")})
    base, teacher, student, control = _planted(teacher_gain, student_gain, **kw)
    scores = {
        "base": _model(base),
        "teacher": _model(teacher),
        "student": {"0": _model(base), "3": _model(student)},
        "control": {"0": _model(base), "3": _model(control)},
    }
    filtered = {"teacher": {"kept": 12, "total": 12}, "control": {"kept": 12, "total": 12}}
    res = summarise(cfg, get_trait("owl"), scores, filtered, {}, tmp_path / "run")
    res["config"] = cfg.to_dict()
    res["planted"] = {"base": base, "teacher": teacher, "student": student, "control": control}
    return res


# --- item 2: the distillation run ----------------------------------------------------------------


def test_run_ratio_is_undefined_when_the_teacher_gain_is_not_resolved(tmp_path):
    from analyses.distill import render_report, summary_lines

    res = _run_results(tmp_path, teacher_gain=0.004, student_gain=0.05)
    h, p = res["headline"], res["planted"]
    g = h["teacher_gain"]
    assert g["ci_low"] < 0 < g["ci_high"]  # the planted premise: the gain's CI includes 0
    for key in ("transfer_ratio_student", "transfer_ratio_control", "transfer_ratio_vs_control"):
        assert h[key]["ratio"] is None and h[key]["ci_low"] is None, key
        assert h[key]["undefined"] == UNDEFINED
    assert all(pt["ratio"]["ratio"] is None for c in res["curves"].values() for pt in c)
    # the raw quotient stays in results.json under its own key, never where reports read
    raw = h["ratios_over_unresolved_gain"]["transfer_ratio_student"]["ratio"]
    tg = p["teacher"].mean() - p["base"].mean()
    assert raw == pytest.approx((p["student"].mean() - p["base"].mean()) / tg)
    raw_text = f"{raw:.3f}"
    report = render_report(res, [])
    row = next(ln for ln in report.splitlines() if ln.startswith("| transfer ratio (student)"))
    assert UNDEFINED in row and raw_text not in report
    vc = next(ln for ln in report.splitlines() if ln.startswith("| (tau(S) − tau(C))"))
    assert UNDEFINED in vc
    lines = summary_lines(res)
    assert f"transfer ratio {UNDEFINED}" in lines and raw_text not in "\n".join(lines)


def test_run_ratio_is_shown_over_a_resolved_teacher_gain(tmp_path):
    from analyses.distill import render_report, summary_lines

    res = _run_results(tmp_path, teacher_gain=0.2, student_gain=0.05, noise=0.01)
    h, p = res["headline"], res["planted"]
    assert h["teacher_gain"]["ci_low"] > 0
    expect = (p["student"].mean() - p["base"].mean()) / (p["teacher"].mean() - p["base"].mean())
    assert h["transfer_ratio_student"]["ratio"] == pytest.approx(expect)
    assert h["transfer_ratio_student"]["defined"] is True
    assert "ratios_over_unresolved_gain" not in h
    assert f"{expect:.3f} [" in render_report(res, [])
    assert summary_lines(res)[1].startswith(f"transfer ratio {expect:.3f} [")


# --- item 4: one seed is said, never "transferred" -----------------------------------------------


@pytest.mark.filterwarnings("ignore:No artists with labels")  # no loss curves in a planted run
def test_one_seed_run_report_has_the_note_and_never_says_transferred(tmp_path):
    """`sublens distill run`'s report and summary and `sublens report RUN` of a run whose
    student is clearly above the control: one training run, so the note and no "transferred"."""
    from analyses.distill import render_report, summary_lines
    from analyses.report import build_report

    res = _run_results(tmp_path, teacher_gain=0.2, student_gain=0.05, noise=0.01)
    assert res["headline"]["student_minus_control"]["ci_low"] > 0  # resolved on this seed
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"hash": "x", "config": res["config"]}))
    saved = {k: v for k, v in res.items() if k != "planted"}
    (run / "results.json").write_text(json.dumps(saved))
    texts = {
        "distill report": render_report(saved, []),
        "distill summary": "\n".join(summary_lines(saved)),
        "sublens report": build_report(run).read_text(),
    }
    for what, text in texts.items():
        assert ONE_SEED_NOTE in text, what
        assert "transferred" not in text.lower(), what
    assert "a gain beyond the control on one seed" in texts["sublens report"]


# --- item 2 and 4: the optimizer ablation --------------------------------------------------------


def _opt_runs(tmp_path: Path, seeds: int, teacher_gain: float, noise: float) -> list[dict]:
    """Per seed, a run's results as the study reads them (headline ratio raw, as an older
    results.json holds it); each seed's student differs a little."""
    from interp.distill.run import difference, transfer_ratio

    runs = []
    for s in range(seeds):
        base, teacher, student, control = _planted(teacher_gain, 0.05 + 0.01 * s, noise, seed=7)
        h = {
            "tau_base": _score(base),
            "tau_teacher": _score(teacher),
            "tau_student": _score(student),
            "tau_control": _score(control),
            "teacher_gain": difference(teacher.tolist(), base.tolist(), 200),
            "transfer_ratio_student": transfer_ratio(
                student.tolist(), base.tolist(), teacher.tolist(), 200
            ),
        }
        runs.append(
            {
                "headline": h,
                "run": str(tmp_path / f"seed_{s}"),
                "config": {"model": "m"},
                "trait": "owl",
            }  # fmt: skip
        )
    return runs


def _opt_report(tmp_path: Path, seeds: int, teacher_gain: float, noise: float):
    from analyses.optimizer_ablation import render_report, summarise_optimizers, write_figures

    runs = {"adamw": _opt_runs(tmp_path, seeds, teacher_gain, noise)}
    res = summarise_optimizers(runs, {"adamw": [0.5] * seeds}, "adamw", ["adamw"], n_boot=300)
    res["config"] = {
        "run_config": {
            "teacher": {"kind": "prompted", "alpha": 1.0},
            "data": {"n": 12, "domain": "numbers"},
            "train": {"objective": "sft", "max_steps": 3, "batch_size": 4},
        },
        "alpha": None, "layers": None, "vector": None, "match_loss": False,
        "max_steps_factor": 4, "seeds": list(range(seeds)), "preset": "quick",
        "loss_tolerance": 0.2,
    }  # fmt: skip
    res.update(alignment_status="skipped", figures=write_figures(res, tmp_path), timings={})
    return res, render_report(res)


def test_optimizer_ablation_hides_a_ratio_over_an_unresolved_teacher_gain(tmp_path):
    res, report = _opt_report(tmp_path, seeds=1, teacher_gain=0.004, noise=0.05)
    r = res["optimizers"]["adamw"]
    assert r["teacher_gain"]["ci_low"] < 0 < r["teacher_gain"]["ci_high"]
    for key in ("transfer_ratio", "transfer_ratio_vs_control"):
        assert r[key]["value"] is None and r[key]["undefined"] == UNDEFINED, key
        assert r[key]["raw_over_unresolved_gain"]["value"] is not None  # kept, not shown
    assert r["per_seed_ratio"] == [None] and r["ratio_t_interval"]["mean"] is None
    raw = f"{r['transfer_ratio']['raw_over_unresolved_gain']['value']:.3g}"
    row = next(ln for ln in report.splitlines() if ln.startswith("| adamw |"))
    assert row.count(UNDEFINED) >= 2 and raw not in row
    assert any(UNDEFINED in f for f in res["findings"])
    # one seed: the note, first in the findings the CLI prints, and never "transferred"
    assert res["findings"][0] == ONE_SEED_NOTE and ONE_SEED_NOTE in report
    assert "transferred" not in report.lower()


def test_optimizer_ablation_over_three_seeds_may_say_transferred(tmp_path):
    res, report = _opt_report(tmp_path, seeds=3, teacher_gain=0.2, noise=0.01)
    r = res["optimizers"]["adamw"]
    assert r["student_minus_control"]["ci_low"] > 0 and r["transfer_ratio"]["defined"]
    assert r["transfer_ratio"]["value"] == pytest.approx(np.mean(r["per_seed_ratio"]), rel=1e-6)
    assert ONE_SEED_NOTE not in report and "adamw: transferred beyond the control" in report


# --- item 2 and 4: compliance --------------------------------------------------------------------


def _ci(v: float, lo: float, hi: float) -> dict[str, float]:
    return {"value": v, "ci_low": lo, "ci_high": hi}


def _compliance_results(teacher_gain: dict[str, float]) -> dict[str, Any]:
    role = {r: _ci(0.5, 0.4, 0.6) for r in ("base", "teacher", "student", "control")}
    ratios = {
        "transfer_ratio": _ci(0.8123, 0.5, 1.1),
        "transfer_ratio_vs_control": _ci(0.6123, 0.3, 0.9),
        "teacher_gain": teacher_gain,
        "student_minus_control": _ci(0.01, -0.01, 0.03),
    }
    return {
        "kind": "run", "dir": "RUN", "trait": "t", "trait_name": "t", "model": "m",
        "ci": "bootstrap", "scorers": {"projection": "projection"},
        "config": {"judge_name": None, "n_prompts": 3, "prompts_source": "x", "n_samples": 2,
                   "max_new_tokens": 6, "temperature": 1.0, "seed": 0, "layer_used": 1,
                   "n_harmless": 4, "harmless_source": "y"},
        "points": [{"point": "run", "alpha": None, "seeds": [0],
                    "scores": {"projection": role}, "ratios": {"projection": ratios}}],
        "examples": [], "timings": {"roles_computed": 4, "roles_reused": 0, "total_s": 1.0},
    }  # fmt: skip


def test_compliance_ratio_undefined_over_unresolved_teacher_gain():
    from analyses.compliance import render_report, summary_lines

    res = _compliance_results(_ci(0.02, -0.01, 0.05))
    report, lines = render_report(res), "\n".join(summary_lines(res))
    row = next(ln for ln in report.splitlines() if ln.startswith("| run | projection |"))
    assert row.count(UNDEFINED) == 2 and "0.812" not in row and "0.612" not in row
    assert UNDEFINED in lines and "0.812" not in lines
    assert ONE_SEED_NOTE in report and ONE_SEED_NOTE in lines
    # a resolved gain: the ratio is shown
    ok = _compliance_results(_ci(0.2, 0.1, 0.3))
    assert "0.812 [0.5, 1.1]" in render_report(ok) and "0.812" in "\n".join(summary_lines(ok))


# --- item 4: the study bootstrap ------------------------------------------------------------------


def _width(stats: dict[str, Any], key: str = "tau_student") -> float:
    return stats[key]["ci_high"] - stats[key]["ci_low"]


def test_three_seed_bootstrap_is_wider_than_the_question_only_ci():
    """Seeds that differ (a training effect) widen the CI against the question-only bootstrap
    of the same numbers; seeds that agree do not narrow it (the question draw is shared by the
    seeds, as they are scored on the same questions)."""
    from analyses.studies import resample_counts, summarise_point

    rng = np.random.default_rng(3)
    q = rng.normal(0, 0.05, 30)  # the questions' own spread, shared by every seed
    arr = lambda seed_shift: {  # noqa: E731
        k: np.stack([q + s + rng.normal(0, 0.002, 30) for s in seed_shift]) for k in
        ("tau_base", "tau_teacher", "tau_student", "tau_control")
    }  # fmt: skip
    cs, cq = resample_counts(3, 30, 2000, seed=0)
    questions_only = np.ones_like(cs)
    differ = arr((0.0, 0.3, 0.6))
    hier, _ = summarise_point(differ, cs, cq)
    flat, _ = summarise_point(differ, questions_only, cq)
    assert _width(hier) > 3 * _width(flat)
    agree = arr((0.0, 0.0, 0.0))
    hier, _ = summarise_point(agree, cs, cq)
    flat, _ = summarise_point(agree, questions_only, cq)
    assert _width(hier) == pytest.approx(_width(flat), rel=0.2)
    # one seed: nothing to resample, the note says so
    cs1, _ = resample_counts(1, 30, 10, seed=0)
    assert (cs1 == 1).all()


def test_studies_default_to_three_seeds_and_share_the_rules():
    import cli
    from analyses import studies
    from analyses.optimizer_ablation import run_optimizer_ablation
    from interp.measure import verdicts

    for cmd in (cli.study_transfer_ratio_cmd, cli.study_optimizers_cmd, cli.defend_cmd):
        assert inspect.signature(cmd).parameters["seeds"].default == 3, cmd.__name__
    assert inspect.signature(run_optimizer_ablation).parameters["seeds"].default == 3
    assert studies.excludes_zero is verdicts.excludes_zero  # one rule, not a local copy

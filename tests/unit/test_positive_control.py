"""`sublens study positive-control` on tiny-llama: a steered teacher, a vector student over two
seeds, LLS rows; the arm table, the recovered share beyond the control, the signal check, and a
rerun that reuses every point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyses.positive_control import make_config, run_positive_control
from interp.core.errors import SublensError


@pytest.fixture(scope="module")
def study(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("pc") / "study"
    cfg = make_config(
        "quick", model="tiny-llama", device="cpu", layer=1, alpha=8.0, n=24, select_top=12,
        steps=12, seeds=2, n_questions=3, students=["vector"], fit_prompts=8, fit_steps=3,
        checkpoint_every=6, n_boot=200,
    )  # fmt: skip
    return out, cfg, run_positive_control(cfg, out, quiet=True)


def test_arm_table_recovery_and_signal(study):
    out, cfg, res = study
    (arm,) = res["arms"]
    assert (arm["trait"], arm["student"], arm["select"], arm["seeds"]) == ("french", "vector",
                                                                           "lls", 2)  # fmt: skip
    # the vector student turns towards the teacher's vector; the control (neutral prompt) not
    assert arm["recovered_share"] > 0.05 > abs(arm["control_recovered_share"])
    assert arm["recovered_cosine"] > 0.2
    assert arm["signal"]["of"] == 2 and arm["signal"]["diff"] > 0
    smc = arm["stats"]["student_minus_control"]
    assert smc["ci_low"] <= smc["value"] <= smc["ci_high"]
    report = (out / "report.md").read_text()
    assert "| french | vector | lls |" in report and (out / "positive_control.png").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["arms"][0]["stats"] == json.loads(json.dumps(arm["stats"]))
    for run in arm["runs"]:  # each point ran the selection and kept select_top rows per side
        sel = json.loads((Path(run) / "results.json").read_text())
        assert sel["selection"]["teacher"]["k"] == 12 and sel["selection"]["control"]["k"] == 12


def test_rerun_reuses_every_point(study):
    out, cfg, res = study
    again = run_positive_control(cfg, out, quiet=True)
    assert again["arms"][0]["stats"] == res["arms"][0]["stats"]


def test_bad_settings_are_one_line_errors():
    with pytest.raises(SublensError, match="unknown student kind"):
        make_config("quick", students=["mlp"])
    with pytest.raises(SublensError, match="select_top"):
        make_config("quick", n=10, select_top=20)
    with pytest.raises(SublensError, match="unknown preset"):
        make_config("huge")

"""What every analysis does at its ends: where its output goes by default, claiming that
directory, the provenance a results.json records (versions, commit, timings, config), and the
pieces every report.md ends with (headline table, what is missing, figures, timings).

One table of default output paths (`default_output`), so the CLI and the library agree on where
a run lands; one `output_dir` so every analysis claims its directory the same way; one
`provenance` so every results.json carries the same fields.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp.core import rundir
from interp.core.io import git_commit, package_versions

ARTIFACTS = Path("artifacts")

# analysis name -> path under ARTIFACTS; "{name}" is filled by the caller (model, data stem...)
DEFAULT_OUTPUTS: dict[str, str] = {
    "cache": "cache/{name}",
    "vectors": "vectors/{name}",
    "approximability": "approximability/{name}",
    "distill": "distill/{name}",
    "demo": "demo/{name}",
    "scan": "scan/{name}",
    "defend": "defend/{name}",
    "transfer-ratio": "studies/transfer-ratio/{name}",
    "optimizers": "studies/optimizers/{name}",
    "toy": "studies/toy",
    "compare": "studies/compare",
    "scanner": "studies/scanner/{name}",
    "positive-control": "studies/positive-control/{name}",
    "approximability-transfer": "studies/approximability-transfer/{name}",
}


def default_output(analysis: str, name: str = "") -> Path:
    """Where `analysis` writes when no --output-path is given (relative to the working dir)."""
    return ARTIFACTS / DEFAULT_OUTPUTS[analysis].format(name=name)


def output_dir(
    path: str | Path | None,
    analysis: str,
    name: str = "",
    kind: str | None = None,
    *,
    key: str | None = None,
    overwrite: bool = False,
    field: str = "hash",
) -> Path:
    """Claim `path` (or the analysis' default) as a run directory of `kind` (default: the
    analysis name) and return it; see `interp.core.rundir` for what claiming refuses. With `key`
    (the config hash a resumable analysis keeps in ``config.json[field]``) a directory holding
    another config is refused unless `overwrite` (`rundir.open_run`)."""
    out = Path(path) if path is not None else default_output(analysis, name)
    if key is not None:
        rundir.open_run(out, kind or analysis, key, overwrite, field=field)
        return out
    return rundir.claim(out, kind or analysis)


def provenance(t_start: float | None = None) -> dict[str, Any]:
    """The fields every results.json carries besides its numbers and config."""
    prov: dict[str, Any] = {"versions": package_versions(), "git_commit": git_commit()}
    if t_start is not None:
        prov["total_s"] = round(time.perf_counter() - t_start, 1)
    return prov


# --- report.md pieces --------------------------------------------------------------------------

HEADLINE_HEADER = ["| quantity | value [95% CI] | what it would mean |", "|---|---|---|"]


def figure_links(results: dict[str, Any], prefix: str = "") -> list[str]:
    """Markdown image links to the figures a results.json lists, under `prefix`."""
    return [f"![{f}]({prefix}{f})" for f in results.get("figures", [])]


def timings_line(results: dict[str, Any]) -> str:
    """The last line of a report: where the time went (results.json ``timings``)."""
    return f"Timings: {json.dumps(results.get('timings', {}))}"


def section_tail(
    results: dict[str, Any], rows: Sequence[tuple[str, str, str]], figure_prefix: str, legend: str
) -> list[str]:
    """Headline table rows, what was skipped, the figures and how to read them (align, probe)."""
    lines = [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if results.get("missing"):
        lines += ["", "Missing or skipped:", ""] + [f"- {m}" for m in results["missing"]]
    lines += ["", *figure_links(results, figure_prefix), ""]
    return [*lines, legend]

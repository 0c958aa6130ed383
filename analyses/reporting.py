"""What every analysis does at its ends: where its output goes by default, claiming that
directory, and the provenance a results.json records (versions, commit, timings, config).

One table of default output paths (`default_output`), so the CLI and the library agree on where
a run lands; one `provenance` so every results.json carries the same fields.
"""

from __future__ import annotations

import time
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
}


def default_output(analysis: str, name: str = "") -> Path:
    """Where `analysis` writes when no --output-path is given (relative to the working dir)."""
    return ARTIFACTS / DEFAULT_OUTPUTS[analysis].format(name=name)


def output_dir(
    path: str | Path | None, analysis: str, name: str = "", kind: str | None = None
) -> Path:
    """Claim `path` (or the analysis' default) as a run directory of `kind` (default: the
    analysis name) and return it; see `interp.core.rundir` for what claiming refuses."""
    out = Path(path) if path is not None else default_output(analysis, name)
    return rundir.claim(out, kind or analysis)


def provenance(t_start: float | None = None) -> dict[str, Any]:
    """The fields every results.json carries besides its numbers and config."""
    prov: dict[str, Any] = {"versions": package_versions(), "git_commit": git_commit()}
    if t_start is not None:
        prov["total_s"] = round(time.perf_counter() - t_start, 1)
    return prov

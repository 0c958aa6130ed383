"""The decision rules every sublens verdict follows, written once (DESIGN "Rules every verdict
follows"). Analyses call these; none re-states a rule.

- A ratio is shown only when its denominator's CI excludes 0 (`ratio_or_undefined`).
- Training variance is in every CI; one seed is said so and never called "transferred"
  (`seed_note`, `transfer_word`).
- k tests → Holm before any "detected" (`holm`; a bootstrap test's p: `bootstrap_p`).
- A permutation test must be able to reach its level (`min_attainable_p`,
  `permutations_for`, `check_permutations`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from interp.core.errors import SublensError

ONE_SEED_NOTE = "1 training seed: training variance not included"


def excludes_zero(d: Mapping[str, Any] | None) -> bool:
    """Whether an interval ({ci_low, ci_high}) lies clear of zero on either side."""
    lo, hi = (d or {}).get("ci_low"), (d or {}).get("ci_high")
    return (
        lo is not None
        and hi is not None
        and math.isfinite(lo)
        and math.isfinite(hi)
        and (lo > 0 or hi < 0)
    )


def above_zero(d: Mapping[str, Any] | None) -> bool:
    """Whether an interval lies entirely above zero (a resolved positive effect)."""
    lo = (d or {}).get("ci_low")
    return lo is not None and math.isfinite(lo) and lo > 0


def ratio_or_undefined(
    ratio: Mapping[str, Any] | None,
    denominator: Mapping[str, Any] | None,
    why: str = "teacher gain not resolved",
) -> dict[str, Any]:
    """`ratio` ({ratio, ci_low, ci_high}) when the denominator's CI excludes 0; otherwise an
    undefined ratio that says why (a ratio over an unresolved gain divides by noise)."""
    if excludes_zero(denominator) and ratio is not None:
        return {**ratio, "defined": True}
    return {"ratio": None, "ci_low": None, "ci_high": None, "defined": False,
            "undefined": f"undefined: {why}"}  # fmt: skip


def seed_note(n_seeds: int) -> str | None:
    """The caveat a report and a CLI summary print next to a one-seed result."""
    return ONE_SEED_NOTE if n_seeds < 2 else None


def transfer_word(n_seeds: int, resolved: bool) -> str:
    """How a report may describe a student-minus-control gain: "transferred" only when it is
    resolved over at least 2 seeds."""
    if not resolved:
        return "no transfer beyond the control resolved"
    if n_seeds < 2:
        return f"a gain beyond the control on one seed ({ONE_SEED_NOTE})"
    return "transferred beyond the control"


def holm(pvalues: Sequence[float], level: float = 0.05) -> list[dict[str, Any]]:
    """Holm's step-down correction: per test, its adjusted p and whether it is rejected at
    `level` (family-wise): the i-th smallest p is multiplied by (k - i), running max, cap 1."""
    p = [float(x) for x in pvalues]
    k = len(p)
    order = sorted(range(k), key=lambda i: p[i])
    adjusted = [0.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p[i]))
        adjusted[i] = running
    return [{"p": p[i], "p_holm": adjusted[i], "rejected": adjusted[i] <= level} for i in range(k)]


def min_attainable_p(n_permutations: int) -> float:
    """The smallest p a permutation test with the observed statistic counted in can give."""
    if n_permutations < 1:
        raise SublensError(f"a permutation test needs at least 1 permutation, got {n_permutations}")
    return 1.0 / (n_permutations + 1)


def permutations_for(level: float, margin: float = 4.0) -> int:
    """The fewest permutations whose smallest attainable p is at most `level / margin`."""
    if not 0 < level < 1:
        raise SublensError(f"a significance level must lie in (0, 1), got {level}")
    return max(1, math.ceil(margin / level) - 1)


def check_permutations(n_permutations: int, level: float, what: str = "permutation test") -> None:
    """Refuse a permutation count that cannot reach `level` (whatever the data, it would never
    flag): one line saying the count that would."""
    if min_attainable_p(n_permutations) > level:
        raise SublensError(
            f"{what}: {n_permutations} permutations cannot give p <= {level:.3g} (smallest p "
            f"{min_attainable_p(n_permutations):.3g}): use at least {permutations_for(level)}"
        )


def bootstrap_p(replicates: Sequence[float]) -> float | None:
    """One-sided bootstrap p of "the statistic is above 0": ``(1 + #replicates <= 0) / (1 +
    #replicates)`` over the finite replicates (None without any). At level (1 − c) / 2 it rejects
    when the percentile interval at c lies above 0, so k such tests take `holm` at that level."""
    v = [float(x) for x in replicates if math.isfinite(float(x))]
    if not v:
        return None
    return (1.0 + sum(x <= 0 for x in v)) / (1.0 + len(v))

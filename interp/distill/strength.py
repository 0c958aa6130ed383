"""`teacher.alpha = "auto"`: the strongest steering a teacher can take and still be a fair teacher.

Steered teachers transfer more reliably than prompted ones, and more strongly the harder they are
steered, until steering breaks the teacher: it stops writing number rows (the Subliminal-Steering
replication's rule: the largest alpha at which 60-70% of *unconstrained* rows still pass the
number filter), or the trait leaks into everything it says (the puppeting gate: the negative and
off-topic control questions stay at or below 0.10, as the clean peak of the approximability
analysis requires). The chosen alpha is the largest candidate passing both; every candidate's
numbers are kept so the choice can be read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interp.core.errors import SublensError
from interp.core.models import LoadedModel
from interp.distill.domains import Domain
from interp.distill.teachers import Teacher
from interp.measure.traits import PUPPETING_MAX_RATE, Trait, score_trait
from interp.vectors.steering import SteeringVector

AUTO = "auto"
DEFAULT_CANDIDATES = (1.0, 2.0, 4.0, 8.0, 16.0)
MIN_VALID_SHARE = 0.6  # the replication's lower end (60-70% of unconstrained rows stay valid)
RULE = (
    f"largest alpha whose unconstrained rows pass the domain filter in at least "
    f"{MIN_VALID_SHARE:.0%} of cases and whose negative and off-topic control scores stay at or "
    f"below {PUPPETING_MAX_RATE} (the puppeting gate)"
)


def choose_alpha(
    loaded: LoadedModel,
    vector: SteeringVector,
    trait: Trait,
    domain: Domain,
    layers: Sequence[int] | None = None,
    positions: str = "all",
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    n_rows: int = 32,
    n_questions: int | None = 30,
    min_valid: float = MIN_VALID_SHARE,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Try each candidate alpha; return ``{"alpha", "why", "rule", "candidates": [...]}``.

    ``alpha`` is None when no candidate passes (the caller must say so and stop: a teacher that
    cannot write the domain's rows teaches nothing through them)."""
    if not candidates or any(a <= 0 for a in candidates):
        raise SublensError("alpha candidates must be positive numbers, e.g. 1,2,4,8,16")
    prompts = domain.prompts(n_rows, seed=seed + 104729)  # not the data rows' prompts
    trait = trait.limited(n_questions)
    rows = []
    for alpha in sorted(float(a) for a in candidates):
        teacher = Teacher(loaded, kind="steered", vector=vector, alpha=alpha, layers=layers,
                          positions=positions)  # fmt: skip
        texts = teacher.generate(prompts, domain, seed=seed, batch_size=batch_size,
                                 constrained=False)  # fmt: skip
        valid = sum(domain.validate(t, p) is None for t, p in zip(texts, prompts, strict=True))
        with teacher.context():
            scores = score_trait(loaded, trait, "logprob", batch_size=batch_size, n_boot=200,
                                 seed=seed)  # fmt: skip
        controls = {
            k: (None if scores[k] is None else float(scores[k].mean))
            for k in ("negative", "offtopic")
        }
        gate = all(v is None or v <= PUPPETING_MAX_RATE for v in controls.values())
        share = valid / len(texts)
        rows.append({
            "alpha": alpha,
            "valid_share": share,
            "trait_score": float(scores["trait"].mean),
            "controls": controls,
            "gate": gate,
            "passes": share >= min_valid and gate,
        })  # fmt: skip
    passing = [r for r in rows if r["passes"]]
    chosen = max(passing, key=lambda r: r["alpha"]) if passing else None
    if chosen is None:
        why = (
            f"no candidate passes: at alpha {rows[0]['alpha']:g} {rows[0]['valid_share']:.0%} "
            f"of unconstrained rows are valid (need {min_valid:.0%}) and the gate "
            f"{'holds' if rows[0]['gate'] else 'fails'}"
        )
    else:
        nxt = next((r for r in rows if r["alpha"] > chosen["alpha"]), None)
        has_controls = any(v is not None for v in chosen["controls"].values())
        why = (
            f"alpha {chosen['alpha']:g}: {chosen['valid_share']:.0%} of unconstrained rows valid, "
            f"gate {'held' if has_controls else 'n/a (the trait has no control questions)'}"
        )
        if nxt is not None:
            broke = []
            if nxt["valid_share"] < min_valid:
                broke.append(f"{nxt['valid_share']:.0%} valid")
            if not nxt["gate"]:
                broke.append("controls above the gate")
            why += f"; alpha {nxt['alpha']:g} fails ({', '.join(broke) or 'see candidates'})"
        else:
            why += "; the largest candidate (try larger ones)"
    return {
        "alpha": None if chosen is None else chosen["alpha"],
        "why": why,
        "rule": RULE,
        "min_valid": min_valid,
        "n_rows": n_rows,
        "candidates": rows,
    }

"""What a model's card says about an input it is about to segment, in one line a user can act on.

A card's ``robustness_validation`` (benchmarks/bench_als_robustness.py) measures the model on its validation
files thinned at random to 10, 3, 1, 0.3 and 0.1 points/m². :func:`density_advice` compares a cloud's density
with those rows: when the model loses more than :data:`ADVICE_DROP` points of mean IoU at that density, the
user is told the card's figures there, and which shipped model with the same classes measures best at it.
"""
from __future__ import annotations

import math

ADVICE_DROP = 5.0
"""Points of mean IoU below the full-density figure at which a density earns a warning."""


def _random_rows(card: dict) -> list[dict]:
    """The card's random-thinning rows with a mean and its change against full density on the same files."""
    rows = ((card.get("robustness_validation") or {}).get("density")) or []
    levels = [r for r in rows if r.get("thinning") == "random" and r.get("target") and r.get("mean") is not None
              and r.get("delta_mean") is not None]
    return sorted(levels, key=lambda r: r["target"])


def _row_at(levels: list[dict], density: float) -> dict | None:
    """The measured level nearest to ``density`` in log scale, or None when the file is denser than every
    level."""
    if not levels or density > levels[-1]["target"]:
        return None
    return min(levels, key=lambda r: abs(math.log(r["target"] / density)))


def density_advice(card: dict, density: float, source: str, others: dict[str, dict] | None = None,
                   has_echo: bool = True) -> str | None:
    """One line when the card measures this model more than ADVICE_DROP points of mean IoU below its
    full-density figure on the same files at the cloud's ``density`` (points/m²), else None. ``others``: name ->
    card of the shipped models (:func:`pcseg.models.zoo.shipped`); the best of those with the same classes at
    that level is named when it beats this model there by ADVICE_DROP; a model reading return numbers only when
    the file has them (``has_echo``)."""
    if not (density > 0 and math.isfinite(density)):
        return None
    row = _row_at(_random_rows(card), density)
    if row is None or row["delta_mean"] >= -ADVICE_DROP:
        return None
    name = card.get("name") or "the model"
    line = (f"{source} holds about {density:.2g} points/m²: {name}'s card measures mean IoU {row['mean']:.1f} at "
            f"{row['target']:g} points/m², {-row['delta_mean']:.1f} below full density on the same files")
    classes = (card.get("classes") or {}).get("names")
    best = None
    for other, ocard in (others or {}).items():
        if other == name or (ocard.get("classes") or {}).get("names") != classes:
            continue
        if "echo" in (ocard.get("features") or ()) and not has_echo:
            continue
        orow = _row_at(_random_rows(ocard), density)
        if orow is not None and orow["target"] == row["target"] and orow["mean"] >= row["mean"] + ADVICE_DROP:
            if best is None or orow["mean"] > best[1]:
                best = (other, orow["mean"])
    if best is not None:
        line += f"; {best[0]}'s card measures {best[1]:.1f} there (--model {best[0]})"
    return line

"""The record every cue returns, and the shared arithmetic that turns features into evidence."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Cue", "linear_evidence", "sigmoid"]


@dataclass(frozen=True)
class Cue:
    """One cue's verdict.

    ``score`` is oriented *phone-like*: 1.0 = this cue alone says a phone took it, 0.0 = a
    dermoscope did, 0.5 = no evidence. ``logit`` is the cue's additive contribution to the
    combined log-odds; ``features`` are the raw measurements; ``reason`` is for people.
    """

    name: str
    score: float
    logit: float
    reason: str
    features: dict[str, float] = field(default_factory=dict)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def linear_evidence(
    features: Mapping[str, float],
    coefficients: Mapping[str, float],
    centres: Mapping[str, float],
    scales: Mapping[str, float],
) -> float:
    """Sum of ``coef * (x - centre) / scale`` over the features that have a coefficient."""
    total = 0.0
    for name, value in features.items():
        coef = coefficients.get(name, 0.0)
        if coef:
            total += coef * (value - centres.get(name, 0.0)) / (scales.get(name, 1.0) or 1.0)
    return total

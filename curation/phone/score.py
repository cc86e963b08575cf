"""Combine the cues into one phone-likeness score, verdict and reasons."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from PIL import Image

from ._cue import Cue, linear_evidence, sigmoid
from ._image import WorkingImage, prepare_image
from .blur import blur_cue
from .colour import colour_cue
from .exposure import exposure_cue
from .framing import framing_cue
from .illumination import illumination_cue
from .magnification import magnification_cue
from .metadata_rules import metadata_cue
from .resolution import resolution_cue
from .thresholds import PhoneThresholds
from .vignette import vignette_cue

__all__ = ["PIXEL_CUES", "PhoneLikeness", "measure_phone_cues", "phone_likeness", "pixel_logit"]

PIXEL_CUES: dict[str, Callable[..., Cue]] = {
    "colour": colour_cue,
    "magnification": magnification_cue,
    "framing": framing_cue,
    "illumination": illumination_cue,
    "vignette": vignette_cue,
    "exposure": exposure_cue,
    "blur": blur_cue,
}


@dataclass(frozen=True)
class PhoneLikeness:
    """``score``: probability-like "a phone could have taken this" in [0, 1].

    ``verdict``: "accepted" (phone-like), "rejected" (dermoscope-like) or "needs_review".
    ``reasons``: the strongest human-readable reasons for the verdict, strongest first.
    ``cues``: each cue's own phone-like score in [0, 1]; ``features``: the raw measurements.
    """

    score: float
    verdict: str
    reasons: list[str]
    cues: dict[str, float]
    logit: float = 0.0
    features: dict[str, float] = field(default_factory=dict)


def _pixel_cues(work: WorkingImage, thresholds: PhoneThresholds) -> list[Cue]:
    cues = [fn(work, thresholds=thresholds) for fn in PIXEL_CUES.values()]
    cues.append(resolution_cue(work.original_size, thresholds=thresholds))
    return cues


def measure_phone_cues(
    image: Image.Image, *, thresholds: PhoneThresholds | None = None
) -> dict[str, float]:
    """All raw pixel features of ``image`` (what the fitted weights are applied to)."""
    t = thresholds or PhoneThresholds()
    work = prepare_image(image, size=t.working_size)
    features: dict[str, float] = {}
    for cue in _pixel_cues(work, t):
        features.update(cue.features)
    return features


def pixel_logit(features: Mapping[str, float], *, thresholds: PhoneThresholds) -> float:
    """The pixel log-odds from already measured features (for fitting and benchmarks).

    Equals ``phone_likeness(image).logit`` for an image without metadata whose size carries no
    resolution evidence.
    """
    t = thresholds
    logit = t.bias + linear_evidence(features, t.coefficients, t.centres, t.scales)
    if features.get("aperture", 0.0) >= t.aperture_min:
        logit += t.aperture_logit
    return _cap(logit, t)


def _cap(logit: float, t: PhoneThresholds) -> float:
    return max(-t.pixel_logit_cap, min(t.pixel_logit_cap, logit))


def _verdict(score: float, t: PhoneThresholds) -> str:
    if score >= t.accept:
        return "accepted"
    if score <= t.reject:
        return "rejected"
    return "needs_review"


def _reasons(cues: list[Cue], logit: float, limit: int) -> list[str]:
    # Cues pushing the same way as the total come first, strongest first; metadata leads when
    # it agrees because it is the most direct evidence.
    direction = 1.0 if logit >= 0 else -1.0
    agreeing = [c for c in cues if c.logit * direction > 0.05]
    agreeing.sort(key=lambda c: (c.name != "metadata", -abs(c.logit)))
    chosen = agreeing[:limit] or sorted(cues, key=lambda c: -abs(c.logit))[:1]
    return [c.reason for c in chosen]


def phone_likeness(
    image: Image.Image,
    metadata: Mapping | None = None,
    *,
    thresholds: PhoneThresholds | None = None,
) -> PhoneLikeness:
    """Could a phone have taken ``image``? Pixel cues plus optional archive metadata.

    ``metadata`` may hold ISIC fields (``image_type``, ``dermoscopic_type``); missing or None is
    neutral. A lazily opened JPEG is decoded at reduced scale (see ``prepare_image``).
    """
    t = thresholds or PhoneThresholds()
    work = prepare_image(image, size=t.working_size)
    cues = _pixel_cues(work, t)
    logit = _cap(t.bias + sum(c.logit for c in cues), t)
    meta = metadata_cue(metadata, thresholds=t)
    if meta is not None:
        cues.append(meta)
        logit += meta.logit
    score = sigmoid(logit)
    features: dict[str, float] = {}
    for cue in cues:
        features.update(cue.features)
    return PhoneLikeness(
        score=score,
        verdict=_verdict(score, t),
        reasons=_reasons(cues, logit, t.max_reasons),
        cues={c.name: c.score for c in cues},
        logit=logit,
        features=features,
    )

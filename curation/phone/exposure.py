"""Exposure cue: how brightly is the skin lit, and are there specular highlights?

A dermoscope's LEDs at contact distance give bright, well-exposed skin, and (polarised or
under gel) no glare. Ambient light is dimmer and a phone flash on dry, curved skin leaves
small near-white specular spots. Highlights = near-white, unsaturated pixels in the centre.
"""

from __future__ import annotations

from ._cue import Cue, linear_evidence, sigmoid
from ._image import WorkingImage
from .thresholds import PhoneThresholds

__all__ = ["exposure_cue", "measure_exposure"]


def measure_exposure(work: WorkingImage) -> dict[str, float]:
    glare = (work.luma > 0.9) & (work.saturation < 0.2) & work.inner
    return {
        "skin_brightness": float(work.luma[work.skin].mean()),
        "highlights": float(glare.sum() / max(1, work.inner.sum())),
    }


def exposure_cue(work: WorkingImage, *, thresholds: PhoneThresholds) -> Cue:
    f = measure_exposure(work)
    logit = linear_evidence(f, thresholds.coefficients, thresholds.centres, thresholds.scales)
    detail = f"skin brightness {f['skin_brightness']:.2f}, {100 * f['highlights']:.1f}% glare"
    if logit < 0:
        reason = f"bright, glare-free exposure ({detail}), as with a dermoscope's own light"
    else:
        reason = f"ambient exposure ({detail}), typical of a phone photo"
    return Cue("exposure", sigmoid(logit), logit, reason, f)

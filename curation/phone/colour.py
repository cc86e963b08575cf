"""Colour cue: the white balance of the skin and the saturation of the pigment.

A dermoscope lights the skin with its own white LED ring (often cross-polarised, which removes
surface glare and shows dermal haemoglobin), so the skin around a lesion renders pink/magenta
and pigment comes out deep and saturated. A phone photo is lit by ambient light or a flash; the
skin renders warm, yellow-green (daylight, indoor lamps) and pigment is less saturated.
Temperature = log(R/B), tint = log(G / sqrt(R*B)) of the mean skin colour (tint < 0: magenta).
"""

from __future__ import annotations

import numpy as np

from ._cue import Cue, linear_evidence, sigmoid
from ._image import WorkingImage
from .thresholds import PhoneThresholds

__all__ = ["colour_cue", "measure_colour"]

_EPS = 1e-3


def measure_colour(work: WorkingImage) -> dict[str, float]:
    r, g, b = (float(work.rgb[..., c][work.skin].mean()) + _EPS for c in range(3))
    saturation = work.saturation
    return {
        "skin_tint": float(np.log(g / np.sqrt(r * b))),
        "skin_temperature": float(np.log(r / b)),
        "skin_saturation": float(saturation[work.skin].mean()),
        "pigment_saturation": float(saturation[work.lesion].mean()),
    }


def colour_cue(work: WorkingImage, *, thresholds: PhoneThresholds) -> Cue:
    f = measure_colour(work)
    logit = linear_evidence(f, thresholds.coefficients, thresholds.centres, thresholds.scales)
    cast = (
        "pink/magenta"
        if f["skin_tint"] < thresholds.centres.get("skin_tint", 0.0)
        else "yellowish (warm)"
    )
    if logit < 0:
        reason = (
            f"{cast} skin colour (tint {f['skin_tint']:+.3f}) and saturated pigment "
            f"({f['pigment_saturation']:.2f}), typical of a dermoscope's LED light"
        )
    else:
        reason = (
            f"{cast} skin colour (tint {f['skin_tint']:+.3f}, pigment saturation "
            f"{f['pigment_saturation']:.2f}), typical of ambient or flash light"
        )
    return Cue("colour", sigmoid(logit), logit, reason, f)

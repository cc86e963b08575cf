"""Vignette cue: a dark circular aperture, the round window of a dermoscope's contact plate.

Many dermoscopic images have black or dark corners where the round lens field ends; a phone
photo has no reason to be dark in *all four* corners at once (a dark background is on one
side). ``corner_darkness`` uses the mean of the four corner patches; ``aperture`` uses the
brightest corner, so it is only high when every corner is dark. Both relative to the centre.
"""

from __future__ import annotations

import numpy as np

from ._cue import Cue, linear_evidence, sigmoid
from ._image import WorkingImage
from .thresholds import PhoneThresholds

__all__ = ["measure_vignette", "vignette_cue"]


def measure_vignette(work: WorkingImage) -> dict[str, float]:
    y = work.luma
    h, w = y.shape
    ch, cw = max(2, h // 8), max(2, w // 8)
    corners = [y[:ch, :cw], y[:ch, -cw:], y[-ch:, :cw], y[-ch:, -cw:]]
    means = np.array([float(c.mean()) for c in corners])
    centre = float(y[work.radius < 0.5].mean()) + 1e-3
    return {
        "corner_darkness": float(np.clip(1.0 - means.mean() / centre, 0.0, 1.0)),
        "aperture": float(np.clip(1.0 - means.max() / centre, 0.0, 1.0)),
        "corner_to_centre": float(means.mean() / centre),
    }


def vignette_cue(work: WorkingImage, *, thresholds: PhoneThresholds) -> Cue:
    f = measure_vignette(work)
    logit = linear_evidence(f, thresholds.coefficients, thresholds.centres, thresholds.scales)
    # The fitted weights see few vignettes (the shared images are centre-cropped), so a clearly
    # round dark aperture gets a physics prior on top: no phone darkens all four corners.
    if f["aperture"] >= thresholds.aperture_min:
        logit += thresholds.aperture_logit
    ratio = f"corner/centre brightness {f['corner_to_centre']:.2f}"
    if f["aperture"] >= thresholds.aperture_min:
        reason = f"dark circular vignette typical of a dermoscope aperture ({ratio})"
    elif logit < 0:
        reason = f"darkened corners, as at the edge of a dermoscope's field ({ratio})"
    else:
        reason = f"no dark aperture in the corners ({ratio})"
    return Cue("vignette", sigmoid(logit), logit, reason, f)

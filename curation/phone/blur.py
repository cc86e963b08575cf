"""Blur cue: overall sharpness (mean absolute Laplacian relative to brightness).

Phones sharpen their output and focus on the skin surface; dermoscopic images through gel and
glass, at high magnification with shallow depth of field, are softer at thumbnail scale. A
weak cue on its own (it also measures focus), so it is combined with the others.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._cue import Cue, linear_evidence, sigmoid
from ._image import WorkingImage
from .thresholds import PhoneThresholds

__all__ = ["blur_cue", "measure_blur"]


def measure_blur(work: WorkingImage) -> dict[str, float]:
    lap = np.abs(ndimage.laplace(work.luma))[work.inner]
    level = float(work.luma[work.inner].mean()) + 1e-3
    return {"sharpness": float(np.log(lap.mean() / level + 1e-3))}


def blur_cue(work: WorkingImage, *, thresholds: PhoneThresholds) -> Cue:
    f = measure_blur(work)
    logit = linear_evidence(f, thresholds.coefficients, thresholds.centres, thresholds.scales)
    soft = "soft" if logit < 0 else "crisp"
    reason = f"{soft} focus (log sharpness {f['sharpness']:.2f})"
    return Cue("blur", sigmoid(logit), logit, reason, f)

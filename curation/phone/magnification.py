"""Magnification cue: is the fine skin surface (pores, creases, follicles) visible?

A phone photo is taken from a hand's length: the frame holds skin context whose surface
pattern shows up as fine texture at thumbnail scale. A dermoscope presses a glass plate (often
with gel) on the skin and magnifies ~10x: the surface is flattened, glare-free and the visible
structures are large (pigment network, vessels), so fine-scale energy is low relative to the
mid-scale structure. Measured on the skin region, at the fixed working size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._cue import Cue, linear_evidence, sigmoid
from ._image import WorkingImage
from .thresholds import PhoneThresholds

__all__ = ["magnification_cue", "measure_magnification"]

_EPS = 1e-3


def measure_magnification(work: WorkingImage) -> dict[str, float]:
    y = work.luma
    g07 = ndimage.gaussian_filter(y, 0.7)
    g15 = ndimage.gaussian_filter(g07, np.sqrt(1.5**2 - 0.7**2))
    g3 = ndimage.gaussian_filter(g15, np.sqrt(3.0**2 - 1.5**2))
    skin = work.skin
    level = float(y[skin].mean()) + _EPS
    fine = float(np.abs(g07 - g15)[skin].mean())
    mid = float(np.abs(g15 - g3)[skin].mean())
    return {
        "fine_texture": float(np.log(fine / level + _EPS)),
        "fine_to_mid_texture": fine / (mid + 1e-4),
    }


def magnification_cue(work: WorkingImage, *, thresholds: PhoneThresholds) -> Cue:
    f = measure_magnification(work)
    logit = linear_evidence(f, thresholds.coefficients, thresholds.centres, thresholds.scales)
    detail = f"fine/mid texture ratio {f['fine_to_mid_texture']:.2f}"
    if logit < 0:
        reason = f"smooth, magnified skin without surface detail ({detail}), as under a dermoscope"
    else:
        reason = f"fine skin-surface texture visible ({detail}), typical of a phone's distance"
    return Cue("magnification", sigmoid(logit), logit, reason, f)

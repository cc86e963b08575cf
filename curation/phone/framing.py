"""Framing cue: how much of the frame is lesion, and is anything dark at the frame's edge?

A dermoscope's field is a couple of centimetres of evenly lit skin, so a lesion often fills the
frame while the rim is skin. A phone photo is taken from further away: the lesion is a small
patch, and the frame's edge catches background, body contours and cast shadows. (Fitted
weights agree: dark edges weigh towards phone, a large lesion share weakly towards dermoscope.)
Pigment = pixels clearly darker than the median skin brightness (after a light blur), measured
inside the central ellipse and on its rim just inside the frame edges (which avoids the
corners that a vignette darkens).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._cue import Cue, linear_evidence, sigmoid
from ._image import WorkingImage
from .thresholds import PhoneThresholds

__all__ = ["framing_cue", "measure_framing"]


def measure_framing(work: WorkingImage, *, darkness: float = 0.85) -> dict[str, float]:
    smooth = ndimage.uniform_filter(work.luma, 5)
    reference = float(np.median(smooth[work.inner]))
    pigment = smooth < darkness * reference
    within = work.radius < 1.0
    rim = within & (work.radius >= 0.85)
    return {
        "lesion_fraction": float(pigment[within].mean()),
        "edge_pigment": float(pigment[rim].mean()),
    }


def framing_cue(work: WorkingImage, *, thresholds: PhoneThresholds) -> Cue:
    f = measure_framing(work)
    logit = linear_evidence(f, thresholds.coefficients, thresholds.centres, thresholds.scales)
    share = f"lesion {100 * f['lesion_fraction']:.0f}% of the frame"
    edge = f"{100 * f['edge_pigment']:.0f}% of the frame edge dark"
    if logit < 0:
        reason = f"lesion framed in clean skin ({share}, {edge}), as in a dermoscope's field"
    else:
        reason = f"dark areas at the frame edge ({edge}: background, contour or shadow)"
    return Cue("framing", sigmoid(logit), logit, reason, f)

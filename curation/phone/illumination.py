"""Illumination cue: how even is the light across the skin?

A dermoscope's LED ring sits millimetres from the skin and lights the field evenly. Ambient
light or a phone flash at a distance leaves gradients across the frame and shadows from the
body's curvature. We fit a plane (slope) and a quadratic (overall fall-off) to the brightness
of the skin pixels only, so the lesion's own darkness does not count as a gradient.
"""

from __future__ import annotations

import numpy as np

from ._cue import Cue, linear_evidence, sigmoid
from ._image import WorkingImage
from .thresholds import PhoneThresholds

__all__ = ["illumination_cue", "measure_illumination"]


def measure_illumination(work: WorkingImage) -> dict[str, float]:
    h, w = work.luma.shape
    # Lighting is low-frequency: every other row and column is plenty, and halves the cost.
    ys, xs = np.nonzero(work.skin[::2, ::2])
    ys, xs = ys * 2, xs * 2
    x = (xs - (w - 1) / 2) / (w / 2)
    y = (ys - (h - 1) / 2) / (h / 2)
    values = work.luma[ys, xs]
    design = np.column_stack([np.ones_like(x), x, y, x * x, y * y, x * y]).astype(np.float64)
    plane, *_ = np.linalg.lstsq(design[:, :3], values, rcond=None)
    quad, *_ = np.linalg.lstsq(design, values, rcond=None)
    level = max(float(plane[0]), 1e-3)
    fitted = design @ quad
    spread = float(np.percentile(fitted, 95) - np.percentile(fitted, 5))
    return {
        "light_gradient": float(np.log(np.hypot(plane[1], plane[2]) / level + 1e-3)),
        "light_falloff": spread / level,
    }


def illumination_cue(work: WorkingImage, *, thresholds: PhoneThresholds) -> Cue:
    f = measure_illumination(work)
    logit = linear_evidence(f, thresholds.coefficients, thresholds.centres, thresholds.scales)
    change = f"{100 * f['light_falloff']:.0f}% brightness change across the skin"
    if logit < 0:
        reason = f"very even illumination ({change}), as from a dermoscope's LED ring"
    else:
        reason = f"uneven lighting ({change}), typical of ambient light or a flash"
    return Cue("illumination", sigmoid(logit), logit, reason, f)

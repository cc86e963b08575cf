"""A quick verdict on whether a decoded photo is usable for scoring.

Checks, in order: too small (from the original size), too dark / too bright (mean luminance), too
blurry (variance of a Laplacian on a grey copy scaled to a fixed short side, so the measure does not
depend on the upload's resolution). Thresholds are keyword arguments so settings can override them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .imageio import DecodedImage

__all__ = ["QUALITY_VERDICTS", "assess_quality", "blur_score", "mean_luminance"]

QUALITY_VERDICTS = ("ok", "too_small", "too_dark", "too_bright", "too_blurry")
_BLUR_SIDE = 256


def mean_luminance(image: Image.Image) -> float:
    """Mean grey level in 0..255."""
    grey = image.convert("L")
    grey.thumbnail((_BLUR_SIDE, _BLUR_SIDE))
    return float(np.asarray(grey, dtype=np.float32).mean())


def blur_score(image: Image.Image, *, side: int = _BLUR_SIDE) -> float:
    """Variance of the Laplacian of a grey copy with short side ``side``; higher is sharper."""
    grey = image.convert("L")
    width, height = grey.size
    scale = side / min(width, height)
    if scale < 1:
        size = (max(3, round(width * scale)), max(3, round(height * scale)))
        grey = grey.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    g = np.asarray(grey, dtype=np.float32)
    if min(g.shape) < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def assess_quality(
    decoded: DecodedImage,
    *,
    min_side: int = 64,
    dark_below: float = 30.0,
    bright_above: float = 235.0,
    blur_below: float = 5.0,
) -> str:
    """``"ok"`` or the first problem found: too_small, too_dark, too_bright, too_blurry."""
    # blur_below was read off ../shared/data: the sharpest-looking dermoscopic images score >= ~7,
    # the same images after a radius-3 Gaussian blur <= ~4. Lesions are smooth, so the bar is low.
    if min(decoded.original_size) < min_side:
        return "too_small"
    luminance = mean_luminance(decoded.image)
    if luminance < dark_below:
        return "too_dark"
    if luminance > bright_above:
        return "too_bright"
    if blur_score(decoded.image) < blur_below:
        return "too_blurry"
    return "ok"

"""Downscale once and precompute the masks every cue shares."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = ["WorkingImage", "prepare_image"]

# Rec. 601 luma weights; the cues only need a perceptual brightness, not colorimetry.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class WorkingImage:
    """A small float copy of the photo plus the regions the cues look at.

    ``radius`` is the distance from the centre normalised so the inscribed ellipse is 1.0 (the
    corners are at ~1.41). ``inner`` is the central ellipse, ``skin`` its brighter half (the
    background skin around a lesion), ``lesion`` its darkest 15 % (pigment).
    """

    rgb: np.ndarray  # float32 [h, w, 3] in [0, 1]
    luma: np.ndarray  # float32 [h, w]
    radius: np.ndarray  # float32 [h, w]
    inner: np.ndarray  # bool [h, w]
    skin: np.ndarray  # bool [h, w]
    lesion: np.ndarray  # bool [h, w]
    saturation: np.ndarray  # float32 [h, w], HSV saturation (max - min) / max
    original_size: tuple[int, int]


def prepare_image(image: Image.Image, *, size: int = 192) -> WorkingImage:
    """Downscale ``image`` so its long side is ``size`` and build the shared masks.

    A lazily opened JPEG is decoded at reduced scale (``Image.draft``, as ``thumbnail`` does), so
    a 12 MP photo costs about as much as a thumbnail. Every image is resampled to the same long
    side, also small ones, so texture cues see the same scale whatever the source resolution.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    if size < 32:
        raise ValueError(f"working size must be >= 32 px, got {size}")
    original_size = image.size
    w, h = original_size
    if w < 8 or h < 8:
        raise ValueError(f"image too small to score: {w}x{h} px (need at least 8x8)")
    # A no-op for loaded images and non-JPEG formats.
    image.draft("RGB", (size, size))
    rgb_image = image.convert("RGB")
    scale = size / max(rgb_image.size)
    new_size = (max(8, round(rgb_image.width * scale)), max(8, round(rgb_image.height * scale)))
    if new_size != rgb_image.size:
        rgb_image = rgb_image.resize(new_size, Image.Resampling.BILINEAR)
    rgb = np.asarray(rgb_image, dtype=np.float32) * np.float32(1 / 255)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
    # Explicit pairwise max/min: numpy reductions over a length-3 last axis are slow.
    top = np.maximum(np.maximum(r, g), b)
    saturation = (top - np.minimum(np.minimum(r, g), b)) / (top + np.float32(1e-3))
    radius = _radius(*luma.shape)
    inner = radius < 0.9
    low, mid = np.quantile(luma[inner], [0.15, 0.5])
    skin = inner & (luma >= mid)
    lesion = inner & (luma <= low)
    return WorkingImage(rgb, luma, radius, inner, skin, lesion, saturation, original_size)


@lru_cache(maxsize=16)
def _radius(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = np.hypot((yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2))
    radius.setflags(write=False)
    return radius

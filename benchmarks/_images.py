"""Generated photo-like JPEGs: a smooth background, a few blobs, mild sensor noise.

Noise keeps the entropy (and so the JPEG decode cost) close to a real phone photo's: a 4000x3000
frame at quality 90 comes out near 3 MB. Big frames are slow to make, so a set repeats a few
distinct images under different names; decoding the same bytes twice costs the same.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["jpeg_set", "make_jpeg"]


def make_jpeg(width: int, height: int, seed: int, *, quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(120, 220, size=(max(1, height // 16), max(1, width // 16), 3))
    image = Image.fromarray(coarse.astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(width // 20, width // 6))
        colour = tuple(int(v) for v in rng.integers(40, 160, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    noisy = np.asarray(image, np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def jpeg_set(width: int, height: int, n: int, *, distinct: int = 8, seed: int = 0) -> list[bytes]:
    """``n`` JPEGs of ``width`` x ``height``, cycling through ``distinct`` different images."""
    unique = [make_jpeg(width, height, seed + i) for i in range(min(n, distinct))]
    return [unique[i % len(unique)] for i in range(n)]

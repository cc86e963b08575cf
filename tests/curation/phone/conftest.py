from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return (yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2)


def make_dermoscopic(seed: int = 0, size: tuple[int, int] = (224, 168)) -> Image.Image:
    """Pigmented blob filling the frame, pink even LED light, smooth, dark round aperture."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = _grid(h, w)
    r = np.hypot(x, y)
    skin = np.array([225, 165, 180], np.float32)  # pink/magenta under a polarised LED
    pigment = np.array([110, 45, 35], np.float32)  # deep saturated brown
    blob = np.clip(1.3 - 1.6 * np.hypot(x * 1.1, y * 0.9), 0, 1)[..., None]
    img = skin * (1 - blob) + pigment * blob
    img += rng.normal(0, 1.0, img.shape)
    img *= np.clip((1.25 - r) / 0.15, 0, 1)[..., None]  # round lens field, black corners
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_phone(seed: int = 0, size: tuple[int, int] = (224, 168)) -> Image.Image:
    """Small lesion on warm skin, side-lit gradient, skin texture and a background strip."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = _grid(h, w)
    skin = np.array([205, 160, 120], np.float32)  # warm skin in ambient light
    texture = rng.normal(0, 10, (h, w))[..., None]
    img = skin + texture
    lesion = np.clip(1 - np.hypot(x + 0.1, y - 0.05) / 0.18, 0, 1)[..., None] ** 0.5
    img = img * (1 - lesion) + np.array([120, 85, 60], np.float32) * lesion
    img *= (0.75 + 0.3 * (x + 1) / 2)[..., None]  # light from the right
    img[: h // 8] = np.array([60, 70, 80], np.float32) + rng.normal(0, 5, (h // 8, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture
def dermoscopic_image() -> Image.Image:
    return make_dermoscopic()


@pytest.fixture
def phone_image() -> Image.Image:
    return make_phone()

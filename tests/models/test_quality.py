from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from models import assess_quality, decode_image

from .conftest import encode, lesion_image


def _decoded(image: Image.Image):
    return decode_image(encode(image, "PNG"))


def test_sharp_lesion_photo_is_ok(rng):
    assert assess_quality(_decoded(lesion_image(rng, size=200))) == "ok"


def test_dark_and_bright(rng):
    photo = np.asarray(lesion_image(rng, size=200), np.float32)
    assert assess_quality(_decoded(Image.fromarray((photo * 0.1).astype(np.uint8)))) == "too_dark"
    bright = np.clip(photo * 0.1 + 240, 0, 255).astype(np.uint8)
    assert assess_quality(_decoded(Image.fromarray(bright))) == "too_bright"


def test_blurry(rng):
    blurred = lesion_image(rng, size=200).filter(ImageFilter.GaussianBlur(4))
    assert assess_quality(_decoded(blurred)) == "too_blurry"
    assert assess_quality(_decoded(blurred), blur_below=0.0) == "ok"


def test_tiny_images_are_too_small():
    assert assess_quality(_decoded(Image.new("RGB", (1, 1), (128, 100, 90)))) == "too_small"
    assert assess_quality(_decoded(Image.new("RGB", (300, 40), (128, 100, 90)))) == "too_small"

from __future__ import annotations

import random

import numpy as np
import pytest

from models import DecodedImageCache, ImageError
from models.augment import phone_capture_augment

from .conftest import encode, lesion_image


def test_augment_is_seeded_and_returns_rgb(photo):
    aug = phone_capture_augment(strength=1.0)
    a, b = aug(photo, random.Random(7)), aug(photo, random.Random(7))
    assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    outs = {np.asarray(aug(photo, random.Random(i))).tobytes() for i in range(5)}
    assert len(outs) == 5


def test_augment_strength_zero_is_identity(photo):
    out = phone_capture_augment(strength=0.0)(photo, random.Random(0))
    assert np.array_equal(np.asarray(out), np.asarray(photo))
    with pytest.raises(ValueError, match="strength"):
        phone_capture_augment(strength=2.0)


def test_augment_changes_colour_statistics(rng):
    image = lesion_image(rng, size=128)
    aug = phone_capture_augment()
    means = [np.asarray(aug(image, random.Random(i)), np.float32).mean((0, 1)) for i in range(20)]
    assert np.std(means, axis=0).min() > 2.0


def test_cache_fetches_once_and_downscales(tmp_path, rng):
    calls = []
    data = encode(lesion_image(rng, size=600), "JPEG")

    def fetch(key):
        calls.append(key)
        return data

    cache = DecodedImageCache(tmp_path, fetch, size=64)
    first = cache.load("raw/a.jpg")
    assert min(first.size) == 64 and first.mode == "RGB"
    second = cache.load("raw/a.jpg")
    assert calls == ["raw/a.jpg"] and "raw/a.jpg" in cache
    assert np.array_equal(np.asarray(first), np.asarray(second))
    # A fresh cache object over the same folder reuses the files.
    DecodedImageCache(tmp_path, fetch, size=64).load("raw/a.jpg")
    assert calls == ["raw/a.jpg"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_does_not_store_failures(tmp_path):
    cache = DecodedImageCache(tmp_path, lambda key: b"not an image", size=64)
    with pytest.raises(ImageError):
        cache.load("bad")
    assert "bad" not in cache

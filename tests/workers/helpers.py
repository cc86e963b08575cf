"""Shared builders for workers tests: a champion model, uploads good and bad."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pandas as pd
import torch
from PIL import Image

import curation
import models
from curation.synthetic import jpeg_bytes, make_lesion_image
from workers import registry


def publish_tiny_champion(store, *, arch: str = "resnet10_image", seed: int = 0) -> str:
    """A randomly initialised network, registered and promoted (scoring needs a champion)."""
    torch.manual_seed(seed)
    net = models.build_model(arch)
    weights, card = models.dump_checkpoint(net, {"arch": arch, "image_size": 64, "seed": seed})
    model_id = registry.publish_model(store, weights, card)
    registry.promote(store, model_id, reason="test")
    return model_id


def publish_tiny_dataset(store, n: int = 24) -> str:
    """A curated version of ``n`` small synthetic lesions (train / val / test), made LATEST."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        key = f"raw/isic/test/ISIC_{i:07d}.jpg"
        store.put(key, jpeg_bytes(make_lesion_image(rng, malignant=bool(i % 2), size=(96, 72))))
        rows.append(
            {
                "isic_id": f"ISIC_{i:07d}",
                "key": key,
                "malignant": float(i % 2),
                "age_approx": 50.0,
                "sex": "female",
                "anatom_site_general": "back",
                "copyright_license": "CC-0",
                "verdict": "accepted",
                "included": True,
                # Every eighth row to val and to test, each split with both classes (a split of
                # one class has no AUC, and promotion would never be judged on it).
                "split": ("train", "train", "val", "test", "train", "train", "test", "val")[i % 8],
            }
        )
    version = "v-tiny"
    manifest = curation.manifest_to_parquet(pd.DataFrame(rows))
    store.put(f"curated/{version}/manifest.parquet", manifest)
    store.write_pointer("curated/LATEST", version)
    return version


def good_jpeg(i: int, size=(320, 240)) -> bytes:
    rng = np.random.default_rng(i)
    return jpeg_bytes(make_lesion_image(rng, malignant=bool(i % 2), style="phone", size=size))


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A small PNG whose header claims width x height pixels (1-bit, compresses to nothing)."""
    raw = zlib.compress(b"\x00" * (1 + width // 8) * 16)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def broken_uploads(max_bytes: int) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected error kind)."""
    good = good_jpeg(1000)
    return {
        "zero.jpg": (b"", "empty"),
        "truncated.jpg": (good[: len(good) // 2], "unreadable"),
        "text.jpg": (b"hello, I am text pretending to be a photo\n" * 3, "not_an_image"),
        "page.jpg": (b"<!DOCTYPE html><html><body>gateway error</body></html>", "not_an_image"),
        "bomb.png": (png_bomb(), "decompression_bomb"),
        "huge.jpg": (b"\xff\xd8\xff" + b"\x00" * (max_bytes + 10), "too_large"),
    }


def png_rgba() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (200, 150), (180, 120, 100, 128)).save(buf, format="PNG")
    return buf.getvalue()

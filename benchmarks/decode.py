"""Decode paths, one image at a time on one thread: ours (JPEG draft), naive Pillow, torchvision."""

from __future__ import annotations

import io
import statistics
import time

import torch
import torchvision.io
import torchvision.transforms.v2.functional as F
from PIL import Image

import models

__all__ = ["decode_rates", "naive_pillow", "ours", "torchvision_jpeg"]


def ours(data: bytes):
    return models.decode_image(data, target=224).image


def naive_pillow(data: bytes):
    return Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224))


def torchvision_jpeg(data: bytes):
    """Fastest library path we found: libjpeg-turbo to a uint8 tensor, antialiased resize."""
    image = torchvision.io.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    return F.resize(image, [224], antialias=True)


def decode_rates(blobs: list[bytes], *, torchvision: bool, repeats: int = 3) -> dict[str, float]:
    """img/s of each path on ``blobs``, round-robin (so all see the same load), median per path.

    torch is limited to one thread so every path gets one core, as Pillow has.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = {"ours": ours, "pillow": naive_pillow}
    if torchvision:
        paths["torchvision"] = torchvision_jpeg
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for round_ in range(max(1, repeats) + 1):  # round 0 is the warm-up
            for name, f in paths.items():
                start = time.perf_counter()
                for data in blobs:
                    f(data)
                if round_:
                    seconds[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {name: len(blobs) / statistics.median(s) for name, s in seconds.items()}

"""Network input: resize the short side, centre crop, normalise with ImageNet statistics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "resize_center_crop", "to_batch", "to_tensor"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def resize_center_crop(image: Image.Image, *, size: int) -> Image.Image:
    """Resize so the short side is ``size``, then crop the central ``size`` x ``size`` square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(
    image: Image.Image,
    *,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """An RGB image as a normalised float tensor ``[3, size, size]``."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(resize_center_crop(image, size=size), dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def to_batch(
    images: Sequence[Image.Image],
    *,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Several images as one ``[N, 3, size, size]`` tensor (see ``to_tensor``), channels_last.

    The uint8 crops are stacked as NHWC, so the NCHW view is already channels_last (what the
    convolutions want) and normalisation is one vectorised pass instead of one per image.
    """
    if not images:
        return torch.empty((0, 3, size, size))
    crops = np.stack(
        [
            np.asarray(resize_center_crop(im if im.mode == "RGB" else im.convert("RGB"), size=size))
            for im in images
        ]
    )
    batch = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    scale = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    shift = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return batch.sub_(shift).div_(scale)

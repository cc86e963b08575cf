"""Network input: resize the short side, centre crop, optional colour constancy, normalise.

Colour constancy (``"shades_of_gray"``, ``"gray_world"``) divides each channel by its Minkowski
p-norm mean, so the scene illuminant is mapped to neutral grey. Dermoscopes light the skin with
their own (cool, polarised) LEDs while phones see ambient light of any colour; that cast is the
largest pixel-level difference between the two domains and says nothing about the lesion. It must
be applied identically at training and scoring time, so it is recorded in the checkpoint card
(``card["colour_constancy"]``) and the Predictor reads it from there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "COLOUR_CONSTANCY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "colour_constancy",
    "crop_array",
    "resize_center_crop",
    "stack_arrays",
    "to_batch",
    "to_tensor",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Method name -> Minkowski norm p (gray world is p = 1; p = 6 is Finlayson & Trezzi's choice, used
# by several ISIC challenge winners).
COLOUR_CONSTANCY: dict[str, int | None] = {"none": None, "gray_world": 1, "shades_of_gray": 6}


def resize_center_crop(image: Image.Image, *, size: int) -> Image.Image:
    """Resize so the short side is ``size``, then crop the central ``size`` x ``size`` square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def colour_constancy(array: np.ndarray, *, method: str = "shades_of_gray") -> np.ndarray:
    """White-balance a float RGB array ``[H, W, 3]`` in [0, 1] (returns a new array)."""
    if method not in COLOUR_CONSTANCY:
        raise ValueError(
            f"colour constancy must be one of {tuple(COLOUR_CONSTANCY)}, got {method!r}"
        )
    p = COLOUR_CONSTANCY[method]
    if p is None:
        return array
    flat = array.reshape(-1, 3).astype(np.float64)
    illuminant = np.power(np.mean(np.power(flat, p), axis=0), 1.0 / p)
    # Guard nearly black channels: a gain above 4 would only amplify noise.
    gains = np.clip(illuminant.mean() / np.maximum(illuminant, 1e-6), 0.25, 4.0)
    return np.clip(array * gains.astype(array.dtype), 0.0, 1.0)


def to_tensor(
    image: Image.Image,
    *,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    colour_constancy_method: str = "none",
) -> torch.Tensor:
    """An RGB image as a normalised float tensor ``[3, size, size]``."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(resize_center_crop(image, size=size), dtype=np.float32) / 255.0
    if colour_constancy_method != "none":
        array = colour_constancy(array, method=colour_constancy_method)
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def crop_array(
    image: Image.Image, *, size: int = 224, colour_constancy_method: str = "none"
) -> np.ndarray:
    """One image's share of :func:`to_batch`: its centre crop as ``[size, size, 3]``.

    uint8 without colour constancy; with it, the colour-balanced float32 in [0, 1] (the same
    arithmetic as ``to_tensor``: training and scoring must agree). Callers with threads to spare
    can make these ahead of the model and hand them to :func:`stack_arrays`.
    """
    crop = np.asarray(resize_center_crop(image if image.mode == "RGB" else image.convert("RGB"),
                                         size=size))  # fmt: skip
    if colour_constancy_method == "none":
        return crop
    return colour_constancy(crop.astype(np.float32) / 255.0, method=colour_constancy_method)


def stack_arrays(
    arrays: Sequence[np.ndarray],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Crops from :func:`crop_array` (all one dtype) as one normalised ``[N, 3, H, W]`` tensor.

    The crops are stacked as NHWC, so the NCHW view is already channels_last (what the
    convolutions want) and normalisation is one vectorised pass instead of one per image.
    """
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    scale = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    shift = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    if batch.dtype == torch.uint8:
        return batch.float().sub_(shift * 255.0).div_(scale * 255.0)
    return batch.sub(shift).div_(scale)


def to_batch(
    images: Sequence[Image.Image],
    *,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    colour_constancy_method: str = "none",
) -> torch.Tensor:
    """Several images as one ``[N, 3, size, size]`` tensor (see ``to_tensor``), channels_last."""
    if not images:
        return torch.empty((0, 3, size, size))
    crops = [crop_array(im, size=size, colour_constancy_method=colour_constancy_method)
             for im in images]  # fmt: skip
    return stack_arrays(crops, mean=mean, std=std)

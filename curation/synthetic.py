"""Synthetic lesion photos with a learnable signal, for the demo, tests and benchmarks.

Two capture styles: ``dermoscopic`` (lesion fills an evenly lit frame inside a dark circular
aperture) and ``phone`` (a smaller lesion on skin under a lighting gradient). Malignant lesions are
larger, darker, multi-coloured and irregular; benign ones small, round and evenly brown.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["make_lesion_image", "write_isic_sample", "jpeg_bytes"]

_SITES = ("anterior torso", "posterior torso", "lower extremity", "upper extremity", "head/neck")


def make_lesion_image(
    rng: np.random.Generator,
    *,
    malignant: bool,
    style: str = "dermoscopic",
    size: tuple[int, int] = (256, 192),
) -> Image.Image:
    """One RGB image; ``style`` is ``dermoscopic`` or ``phone``."""
    if style not in ("dermoscopic", "phone"):
        raise ValueError(f"style must be 'dermoscopic' or 'phone', got {style!r}")
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    skin = np.array([215, 170, 140], np.float32) + rng.normal(0, 8, 3)
    img = np.ones((h, w, 3), np.float32) * skin
    img += rng.normal(0, 4, (h, w, 1))
    cx, cy = w / 2 + rng.normal(0, w * 0.05), h / 2 + rng.normal(0, h * 0.05)
    scale = min(w, h) * (0.32 if style == "dermoscopic" else 0.12)
    radius = scale * (1.25 if malignant else 0.8) * rng.uniform(0.85, 1.15)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + (0.25 if malignant else 0.04) * np.sin(
        angle * rng.integers(3, 7) + rng.uniform(0, 6)
    )
    dist = np.hypot(xx - cx, yy - cy) / (radius * wobble)
    mask = np.clip(1.2 - dist, 0, 1)[..., None] ** 0.5
    if malignant:
        colour = np.where(
            (np.sin(xx / 7 + rng.uniform(0, 6)) > 0)[..., None], [60, 30, 35], [120, 70, 90]
        ).astype(np.float32)
    else:
        colour = np.array([140, 90, 60], np.float32) + rng.normal(0, 6, 3)
    img = img * (1 - mask) + colour * mask
    if style == "dermoscopic":
        r = np.hypot(xx - w / 2, yy - h / 2) / (0.5 * min(w, h) * 1.15)
        img *= np.clip(1.6 - 1.6 * r**4, 0, 1)[..., None]  # dark circular aperture
    else:
        gradient = 0.75 + 0.45 * (xx / w) * rng.uniform(0.6, 1.0) + 0.1 * (yy / h)
        img *= gradient[..., None]
        img[..., 2] *= rng.uniform(0.85, 1.0)  # warm ambient white balance
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(0.6))


def jpeg_bytes(image: Image.Image, *, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_isic_sample(
    folder: str | Path, *, n: int = 200, seed: int = 0, phone_fraction: float = 0.3
) -> Path:
    """Write ``n`` images and an isic-cli style ``metadata.csv`` to ``folder``; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fields = [
        "isic_id", "attribution", "copyright_license", "age_approx", "anatom_site_general",
        "diagnosis_1", "diagnosis_3", "image_type", "lesion_id", "patient_id", "sex",
    ]  # fmt: skip
    rows = []
    for i in range(n):
        malignant = bool(rng.random() < 0.4)
        phone = bool(rng.random() < phone_fraction)
        isic_id = f"ISIC_{9000000 + i:07d}"
        image = make_lesion_image(
            rng, malignant=malignant, style="phone" if phone else "dermoscopic"
        )
        (folder / f"{isic_id}.jpg").write_bytes(jpeg_bytes(image))
        rows.append(
            {
                "isic_id": isic_id,
                "attribution": "birthmark synthetic sample",
                "copyright_license": "CC-0",
                "age_approx": int(rng.integers(4, 17) * 5) if rng.random() > 0.1 else "",
                "anatom_site_general": _SITES[int(rng.integers(len(_SITES)))]
                if rng.random() > 0.1
                else "",
                "diagnosis_1": "Malignant" if malignant else "Benign",
                "diagnosis_3": "Melanoma Invasive" if malignant else "Nevus",
                "image_type": "clinical: close-up" if phone else "dermoscopic",
                "lesion_id": f"IL_{1000000 + i // 2:07d}",
                "patient_id": f"IP_{2000000 + i // 4:07d}",
                "sex": ("male", "female")[int(rng.integers(2))] if rng.random() > 0.1 else "",
            }
        )
    path = folder / "metadata.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path

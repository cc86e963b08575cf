from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def lesion_image(
    rng: np.random.Generator, *, size: int = 96, dark_blob: bool = True
) -> Image.Image:
    """Skin-coloured noise with a darker round blob: a stand-in for a lesion photo."""
    yy, xx = np.mgrid[:size, :size]
    base = np.array([200, 150, 130], np.float32) + rng.normal(0, 12, (size, size, 3))
    if dark_blob:
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r = rng.uniform(0.15, 0.3) * size
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        base[mask] *= 0.45
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def photo(rng) -> Image.Image:
    return lesion_image(rng, size=120)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    barriers stall whenever a sibling thread is descheduled (tests ran 10-20x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""A local disk cache of decoded, downscaled training images.

Training reads every image once per epoch. Fetching from the object store and decoding a
multi-megapixel JPEG each time would dominate an epoch on two CPU cores, so the first ``load``
decodes and downscales once and keeps the pixels as an ``.npy`` file (uncompressed: reading it back
is a plain copy).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .imageio import decode_image

__all__ = ["DecodedImageCache"]


class DecodedImageCache:
    """``load(key)`` returns an RGB image with short side ``size`` (or smaller, if the original is).

    ``fetch(key) -> bytes`` is called only on a cache miss. Decoding errors (``ImageError``)
    propagate and are not cached. Writes go to a temporary file renamed into place, so concurrent
    loads of the same key never see a half-written file.
    """

    def __init__(self, root: str | os.PathLike, fetch: Callable[[str], bytes], *, size: int = 256):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.root = Path(root)
        self.fetch = fetch
        self.size = size
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        digest = hashlib.sha1(f"{self.size}:{key}".encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def load(self, key: str) -> Image.Image:
        path = self.path(key)
        try:
            return Image.fromarray(np.load(path, allow_pickle=False))
        except FileNotFoundError:
            pass
        image = decode_image(self.fetch(key), target=self.size).image
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.asarray(image), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return image

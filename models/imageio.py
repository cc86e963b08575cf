"""Decode untrusted image bytes into small RGB images, with typed errors.

Uploads come from phones and apps: JPEG, HEIC/HEIF, PNG, WebP, TIFF, GIF, with odd colour modes and
EXIF orientation. ``decode_image`` identifies the format by content (never by file name), refuses
decompression bombs from the header before decoding any pixels, decodes JPEGs at reduced scale
(libjpeg DCT scaling through ``Image.draft``) and returns an upright RGB image whose short side is
at least ``target``. Every failure is an ``ImageError`` whose ``kind`` a report can count.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from typing import NamedTuple

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ERROR_KINDS",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "ImageError",
    "decode_image",
    "to_rgb",
]

pillow_heif.register_heif_opener()

DEFAULT_MAX_PIXELS = 100_000_000  # a 100 MP phone sensor is the largest legitimate upload
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ERROR_KINDS = (
    "empty",
    "not_an_image",
    "unreadable",
    "decompression_bomb",
    "too_large",
    "unsupported",
)
SUPPORTED_FORMATS = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "TIFF", "GIF", "BMP", "HEIF", "AVIF", "DIB"}
)
# Leading bytes of formats we accept: when Pillow cannot identify bytes that start like an image,
# the file is damaged ("unreadable") rather than something else altogether ("not_an_image").
_SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
)
# Errors Pillow and its plugins raise on damaged data; anything else is a bug and should surface.
# RuntimeError: Pillow's AVIF plugin (libavif) raises it for damaged files, at open and at load.
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error, IndexError, KeyError
)  # fmt: skip


class ImageError(ValueError):
    """An upload that cannot be turned into an image; ``kind`` is one of ``ERROR_KINDS``."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ImageError kind {kind!r}; expected one of {ERROR_KINDS}")
        super().__init__(message)
        self.kind = kind


class DecodedImage(NamedTuple):
    image: Image.Image  # RGB, upright, short side >= target (unless the original is smaller)
    # (width, height) upright, as the photo is seen (EXIF orientation applied, as HEIF decoders
    # do), before any scaling
    original_size: tuple[int, int]
    format: str  # Pillow's format name, e.g. "JPEG", "HEIF", "PNG"


def _looks_like_image(data: bytes) -> bool:
    if data.startswith(_SIGNATURES):
        return True
    # RIFF....WEBP and ISO-BMFF "ftyp" boxes (HEIC, AVIF) keep the brand at a fixed offset.
    return (data[:4] == b"RIFF" and data[8:12] == b"WEBP") or data[4:8] == b"ftyp"


def _bomb(err: Image.DecompressionBombError, max_pixels: int) -> ImageError:
    """Pillow refuses headers past twice its own global limit before ours is checked: name ours."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    claimed = f"{int(found.group(1)):,} pixels" if found else "its size"
    return ImageError("decompression_bomb", f"{claimed} exceeds the limit of {max_pixels:,}")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We apply our own limit below; Pillow's warning would only be noise in worker logs.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise _bomb(err, max_pixels) from None
    except UnidentifiedImageError:
        if _looks_like_image(data):
            raise ImageError("unreadable", "image header is damaged or truncated") from None
        raise ImageError("not_an_image", f"not an image (starts with {data[:16]!r})") from None
    except _DECODE_ERRORS as err:
        raise ImageError("unreadable", f"cannot read image header: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            "decompression_bomb",
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}",
        )
    if width < 1 or height < 1:
        raise ImageError("unreadable", f"image header claims a size of {width}x{height}")
    if image.format not in SUPPORTED_FORMATS:
        raise ImageError(
            "unsupported",
            f"format {image.format} is not supported; expected one of {sorted(SUPPORTED_FORMATS)}",
        )
    return image


def _exif_transpose(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS + (TypeError, ZeroDivisionError):
        # Broken EXIF is common in re-encoded uploads; an unrotated image beats no image.
        return image


def _scale_to_8bit(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float64)
    top = float(array.max(initial=0.0))
    if array.min(initial=0.0) >= 0 and top <= 255:
        return array.astype(np.uint8)
    if array.min(initial=0.0) >= 0 and top <= 65535:
        return np.round(array / 257.0).astype(np.uint8)  # 16-bit samples
    low = float(array.min())
    span = max(top - low, 1e-12)
    return np.round((array - low) * (255.0 / span)).astype(np.uint8)


def to_rgb(
    image: Image.Image, *, background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is composited onto ``background``."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return Image.fromarray(_scale_to_8bit(np.asarray(image))).convert("RGB")
    if mode == "P" and "transparency" not in image.info:
        return image.convert("RGB")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


_REDUCING_GAP = 2.0


def _shrink(image: Image.Image, target: int, *, with_torch: bool = True) -> Image.Image:
    width, height = image.size
    short = min(width, height)
    if short <= target:
        return image
    size = (max(1, round(width * target / short)), max(1, round(height * target / short)))
    if image.mode != "RGB" or short >= _REDUCING_GAP * target or not with_torch:
        # reducing_gap: box-reduce by an integer factor first, then a short bilinear pass (fast,
        # clean). Big reductions only happen here for non-JPEGs: JPEGs arrive DCT-scaled.
        return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
    # Under the reducing gap Pillow does a plain antialiased bilinear pass; torchvision's uint8
    # kernel computes the same filter (within one level) with SIMD, 2-4x faster, and the resize
    # was the largest cost after a draft decode. It runs single-threaded, so decode threads do
    # not fan out into torch's intra-op pool. Imported here: a thumbnail (``with_torch=False``)
    # need not start torch.
    import torch
    from torchvision.transforms.v2.functional import resize_image

    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    small = resize_image(pixels, [size[1], size[0]], antialias=True)
    return Image.fromarray(small.permute(1, 2, 0).contiguous().numpy())


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    target: int | None = 224,
    resize_with_torch: bool = True,
) -> DecodedImage:
    """Decode image bytes to an upright RGB image whose short side is ``target`` (or smaller).

    ``target=None`` keeps full resolution. ``resize_with_torch=False`` resizes with Pillow alone
    (the same filter, within one level, 2-4x slower): for a thumbnail in a process that should not
    start torch (~3 s), such as the review CLI. Raises ``ImageError`` with kind ``empty``,
    ``not_an_image``, ``unreadable``, ``decompression_bomb`` (header size > ``max_pixels``),
    ``too_large`` (more than ``max_bytes``) or ``unsupported``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError("empty", "no bytes")
    if len(data) > max_bytes:
        raise ImageError("too_large", f"{len(data):,} bytes exceeds the limit of {max_bytes:,}")
    image = _open(data, max_pixels)
    original_size = image.size
    fmt = image.format
    if target is not None and fmt in ("JPEG", "MPO"):
        # libjpeg decodes directly at 1/2, 1/4 or 1/8 scale, keeping both sides >= the request.
        image.draft("RGB", (target, target))
    try:
        image.load()
        stored = image.size
        image = _exif_transpose(image)
        if image.size != stored:  # turned a quarter: report the size as the photo is seen
            original_size = original_size[::-1]
        image = to_rgb(image)
    except Image.DecompressionBombError as err:
        raise ImageError("decompression_bomb", str(err)) from None
    except _DECODE_ERRORS as err:
        if "decoder" in str(err) and "not available" in str(err):
            raise ImageError("unsupported", f"no decoder for this {fmt} variant: {err}") from None
        raise ImageError("unreadable", f"cannot decode {fmt} image: {err}") from None
    if target is not None:
        image = _shrink(image, target, with_torch=resize_with_torch)
    return DecodedImage(image, original_size, fmt)

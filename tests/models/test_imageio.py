from __future__ import annotations

import io
import struct
import tomllib
import zlib
from pathlib import Path

import numpy as np
import PIL
import pytest
from packaging.requirements import Requirement
from PIL import Image, ImageOps, features

from models import DecodedImage, ImageError, decode_image, to_tensor

from .conftest import encode


def _rgb(size=(80, 60), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _kind(data: bytes, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(data, **kwargs)
    return info.value.kind


def test_plain_jpeg():
    decoded = decode_image(encode(_rgb(), "JPEG"))
    assert isinstance(decoded, DecodedImage)
    assert decoded.format == "JPEG" and decoded.original_size == (80, 60)
    assert decoded.image.mode == "RGB" and decoded.image.size == (80, 60)


def test_large_jpeg_is_draft_decoded_and_shrunk():
    data = encode(_rgb((1600, 1200)), "JPEG", quality=80)
    decoded = decode_image(data, target=224)
    assert decoded.original_size == (1600, 1200)
    assert min(decoded.image.size) == 224 and decoded.image.size == (299, 224)
    assert decode_image(data, target=None).image.size == (1600, 1200)


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(encode(cmyk, "JPEG"))
    r, g, b = decoded.image.getpixel((20, 15))
    assert decoded.image.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_png_with_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 10, 20))
    image = decode_image(encode(rgba, "PNG")).image
    assert image.getpixel((15, 5)) == (255, 255, 255)
    assert image.getpixel((5, 5)) == (0, 0, 255)


def test_la_png():
    la = Image.new("LA", (10, 10), (0, 255))
    assert decode_image(encode(la, "PNG")).image.getpixel((1, 1)) == (0, 0, 0)


def test_palette_gif_with_transparency():
    p = _rgb((32, 32)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p.info["transparency"] = p.getpixel((0, 0))
    decoded = decode_image(encode(p, "GIF", transparency=p.getpixel((0, 0))))
    assert decoded.format == "GIF" and decoded.image.mode == "RGB"
    assert decoded.image.getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotated_jpeg_is_upright_and_reports_its_upright_size():
    image = _rgb((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.original_size == (40, 80)  # as seen, like a HEIC's (its decoder turns it)
    assert decoded.image.size == (40, 80)
    exif[0x0112] = 3  # a half turn keeps the sides
    assert decode_image(encode(image, "JPEG", exif=exif.tobytes())).original_size == (80, 40)


def _smooth_photo(width: int, height: int) -> Image.Image:
    """A smooth frame with a corner marker: orientation errors and resampling errors both show."""
    rng = np.random.default_rng(1)
    coarse = rng.integers(60, 220, (height // 32, width // 32, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    image.paste((10, 10, 10), (0, 0, width // 5, height // 5))  # dark top-left before rotation
    return image


def _pillow_reference(data: bytes, size: tuple[int, int], *, draft: bool) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    if draft:
        image.draft("RGB", (224, 224))
    image = ImageOps.exif_transpose(image).convert("RGB")
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_fast_resize_matches_pillow_on_exif_rotated_jpeg(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(_smooth_photo(1024, 768), "JPEG", quality=90, exif=exif.tobytes())
    decoded = decode_image(data, target=224)
    expected = (299, 224) if orientation in (1, 3) else (224, 299)
    assert decoded.image.mode == "RGB" and decoded.image.size == expected
    ours = np.asarray(decoded.image, np.int16)
    # Same draft decode, Pillow's own resize: the torchvision kernel is the same filter.
    same_draft = np.asarray(_pillow_reference(data, expected, draft=True), np.int16)
    assert np.abs(ours - same_draft).max() <= 1
    # Full-resolution Pillow decode: same orientation and near-identical network input.
    full = _pillow_reference(data, expected, draft=False)
    assert (to_tensor(decoded.image) - to_tensor(full)).abs().mean() < 0.02
    corner = {1: (0, 0), 3: (-1, -1), 6: (0, -1), 8: (-1, 0)}[orientation]
    assert ours[corner[0] * 10, corner[1] * 10].max() < 40  # the dark marker ended up here
    # Without torch (a review thumbnail): Pillow's resize of the same draft, exactly.
    pillow_only = decode_image(data, target=224, resize_with_torch=False).image
    assert np.array_equal(np.asarray(pillow_only, np.int16), same_draft)


def test_bad_exif_orientation_is_ignored():
    exif = Image.Exif()
    exif[0x0112] = 42
    decoded = decode_image(encode(_rgb((80, 40)), "JPEG", exif=exif.tobytes()))
    assert decoded.image.size == (80, 40)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grey_scaled_to_8bit(fmt):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    decoded = decode_image(encode(image, fmt))
    pixels = np.asarray(decoded.image)
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert pixels[0, -1].tolist() == [255, 255, 255]
    assert 120 < pixels[0, 32, 0] < 135  # linear mid-grey, not clipped to white


def test_one_bit_png():
    image = Image.new("1", (16, 16), 1)
    assert decode_image(encode(image, "PNG")).image.getpixel((3, 3)) == (255, 255, 255)


def test_heic():
    decoded = decode_image(encode(_rgb((64, 48)), "HEIF", quality=90))
    assert decoded.format == "HEIF" and decoded.image.size == (64, 48)


def test_webp_and_bmp():
    assert decode_image(encode(_rgb(), "WEBP")).format == "WEBP"
    assert decode_image(encode(_rgb(), "BMP")).format == "BMP"


def test_avif_decodes_with_the_installed_pillow():
    """AVIF is an upload format scoring accepts; Pillow's wheels carry libavif from 11.3.0 on
    (11.2.1 read AVIF only when built from source against libavif)."""
    assert features.check("avif"), f"Pillow {PIL.__version__} was built without AVIF"
    decoded = decode_image(encode(_rgb((64, 48)), "AVIF"))
    assert decoded.format == "AVIF" and decoded.original_size == (64, 48)


def test_the_pillow_requirement_admits_no_wheel_without_avif():
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    deps = [Requirement(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    pillow = next(r for r in deps if r.name.lower() == "pillow")
    assert not pillow.specifier.contains("11.2.1"), f"{pillow} allows a Pillow without AVIF"
    assert pillow.specifier.contains("11.3.0")


def test_one_pixel_image_decodes():
    decoded = decode_image(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"))
    assert decoded.image.size == (1, 1)


def test_empty_bytes():
    assert _kind(b"") == "empty"


@pytest.mark.parametrize(
    "data",
    [b"hello, this is plainly text\n" * 4, b"<!DOCTYPE html><html><body>404</body></html>"],
)
def test_text_and_html_are_not_images(data):
    assert _kind(data) == "not_an_image"


def test_truncated_jpeg_is_unreadable():
    data = encode(_rgb((200, 150)), "JPEG")
    assert _kind(data[: len(data) // 2]) == "unreadable"
    assert _kind(data[:40]) == "unreadable"


def test_too_many_bytes():
    assert _kind(encode(_rgb(), "PNG"), max_bytes=100) == "too_large"


def _patch_png_size(png: bytes, width: int, height: int) -> bytes:
    # IHDR is the first chunk: 8-byte signature, 4 length, 4 type, 13 data, 4 CRC.
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return png[:16] + bytes(ihdr) + crc + png[33:]


def test_decompression_bomb_refused_from_header():
    bomb = _patch_png_size(encode(Image.new("RGB", (2, 2)), "PNG"), 20000, 20000)
    assert _kind(bomb) == "decompression_bomb"
    # Past Pillow's own refusal too, the message names the limit that applies: ours.
    with pytest.raises(ImageError, match="400,000,000 pixels exceeds the limit of 120,000,000"):
        decode_image(bomb, max_pixels=120_000_000)
    # Under Pillow's own limit but over ours: our max_pixels applies.
    assert _kind(_patch_png_size(bomb, 9000, 9000), max_pixels=50_000_000) == "decompression_bomb"


def test_unsupported_format():
    assert _kind(encode(_rgb((16, 16)), "ICO")) == "unsupported"


def test_type_error_for_non_bytes():
    with pytest.raises(TypeError, match="bytes"):
        decode_image(io.BytesIO(b"x"))  # type: ignore[arg-type]


def test_damaged_avif_is_an_image_error_not_a_runtime_error():
    """Pillow's AVIF plugin raises RuntimeError on damaged data (at open and at load); before, it
    escaped decode_image and failed the whole scoring job instead of one `unreadable` row."""
    data = encode(_rgb((64, 48)), "AVIF")
    kinds = set()
    for start in range(0, len(data), 8):
        damaged = bytearray(data)
        damaged[start : start + 8] = b"\xff" * 8
        try:
            decode_image(bytes(damaged))
        except ImageError as err:
            kinds.add(err.kind)
    assert "unreadable" in kinds

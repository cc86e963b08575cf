"""Cheap checks that an image file decodes (shared by the ISIC pull and local imports).

Importing it registers Pillow's HEIC/HEIF opener: Pillow reads neither on its own, and nothing
else in this package may be relied on to have registered it (``models`` loads lazily).
"""

from __future__ import annotations

import warnings
from os import PathLike

import pillow_heif
from PIL import Image, UnidentifiedImageError

pillow_heif.register_heif_opener()


def unreadable_reason(path: str | PathLike[str]) -> str | None:
    """None when the file decodes as an image, else a short human reason.

    JPEGs decode in draft mode (1/8 scale), which still reads the whole entropy-coded stream, so a
    truncated file is caught without paying for a full-resolution decode.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "JPEG":
                    img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
    except FileNotFoundError:
        return "file not found"
    except IsADirectoryError:
        return "not a file"
    except UnidentifiedImageError:
        return "not an image"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "decompression bomb"
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated ...").
        return f"corrupt image: {exc}"
    except MemoryError:
        raise
    except Exception as exc:  # plugins raise more (the AVIF one RuntimeError): still one file's
        return f"corrupt image: {type(exc).__name__}: {exc}"
    return None

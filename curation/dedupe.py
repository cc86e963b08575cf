"""Near-duplicate detection with perceptual hashes (within and across pulls)."""

from __future__ import annotations

import io
import math
from os import PathLike

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from curation import _images  # noqa: F401  (registers the HEIC/HEIF opener)
from curation._columns import clean_text

__all__ = ["perceptual_hash", "find_duplicates", "hash_distance"]

_HASH_HEX_CHARS = 16  # imagehash.phash default: 8x8 = 64 bits
_CHUNK_ROWS = 1024  # pairwise distances per chunk: 1024 x N uint64s


def perceptual_hash(image: Image.Image | bytes | str | PathLike[str]) -> str:
    """64-bit DCT perceptual hash (imagehash.phash) as 16 hex chars."""
    if isinstance(image, bytes):
        with Image.open(io.BytesIO(image)) as img:
            return str(imagehash.phash(img.convert("RGB")))
    if isinstance(image, (str, PathLike)):
        with Image.open(image) as img:
            return str(imagehash.phash(img.convert("RGB")))
    if isinstance(image, Image.Image):
        return str(imagehash.phash(image.convert("RGB")))
    raise TypeError(f"image must be a PIL image, bytes or a path, got {type(image).__name__}")


def hash_distance(a: str, b: str) -> int:
    """Hamming distance between two hex hashes."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def find_duplicates(
    df: pd.DataFrame, *, hash_column: str = "phash", max_distance: int = 6
) -> pd.DataFrame:
    """Copy of `df` with `duplicate_group` (str or None) and `is_duplicate` (bool).

    Rows whose hashes are within `max_distance` bits are linked, transitively. Each group is
    named after the row it keeps, chosen in this order: readable, accepted verdict, known label,
    more pixels, smallest isic_id. Rows without a hash are never duplicates.
    """
    if hash_column not in df.columns:
        raise ValueError(f"column {hash_column!r} not found; columns: {list(df.columns)}")
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    out = df.copy()
    positions = [i for i, h in enumerate(out[hash_column]) if clean_text(h) is not None]
    hashes = np.array([_hash_to_int(out[hash_column].iloc[i]) for i in positions], dtype=np.uint64)
    parent = list(range(len(positions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(hashes), _CHUNK_ROWS):
        block = hashes[start : start + _CHUNK_ROWS]
        # Only compare with later rows: each pair once.
        distances = np.bitwise_count(block[:, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(distances <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = find(start + r), find(start + c)
            if a != b:
                parent[b] = a
    members: dict[int, list[int]] = {}
    for i in range(len(positions)):
        members.setdefault(find(i), []).append(positions[i])

    groups: list[str | None] = [None] * len(out)
    duplicate = [False] * len(out)
    order = _keep_order(out)
    for rows_in_group in members.values():
        if len(rows_in_group) < 2:
            continue
        keeper = min(rows_in_group, key=order.__getitem__)
        name = _group_name(out, keeper)
        for row in rows_in_group:
            groups[row] = name
            duplicate[row] = row != keeper
    out["duplicate_group"] = pd.Series(groups, index=out.index, dtype=object)
    out["is_duplicate"] = pd.Series(duplicate, index=out.index, dtype=bool)
    return out


def _hash_to_int(value: object) -> int:
    text = str(value).strip()
    if len(text) != _HASH_HEX_CHARS:
        raise ValueError(f"expected a 64-bit hash as {_HASH_HEX_CHARS} hex chars, got {text!r}")
    try:
        return int(text, 16)
    except ValueError:
        raise ValueError(f"expected a hex perceptual hash, got {text!r}") from None


def _keep_order(df: pd.DataFrame) -> list[tuple]:
    """Sort key per row position: the smallest key is kept."""
    n = len(df)

    def column(name: str) -> list:
        return list(df[name]) if name in df.columns else [None] * n

    readable = column("readable")
    verdict = column("verdict") if "verdict" in df.columns else column("phone_verdict")
    malignant = column("malignant")
    width = column("pixels_x") if "pixels_x" in df.columns else column("width")
    height = column("pixels_y") if "pixels_y" in df.columns else column("height")
    ids = column("isic_id")
    keys = []
    for i in range(n):
        area = _number(width[i]) * _number(height[i])
        keys.append(
            (
                readable[i] is not None and not bool(readable[i]),
                verdict[i] != "accepted",
                math.isnan(_number(malignant[i])),
                -(area if not math.isnan(area) else 0.0),
                str(ids[i]) if ids[i] is not None else "",
                i,
            )
        )
    return keys


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _group_name(df: pd.DataFrame, position: int) -> str:
    if "isic_id" in df.columns and clean_text(df["isic_id"].iloc[position]) is not None:
        return f"dup:{df['isic_id'].iloc[position]}"
    return f"dup:row{position}"

from __future__ import annotations

import io
import random
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from curation import find_duplicates, perceptual_hash
from curation.dedupe import hash_distance


def _lesion(seed: int, size=(160, 120)) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", size, (rng.randint(160, 230), rng.randint(110, 180), 120))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.randint(0, size[0]), rng.randint(0, size[1])
        r = rng.randint(8, 40)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randint(0, 120), 40, 30))
    return img


def _recompress(img: Image.Image, *, scale=0.6, quality=60) -> Image.Image:
    small = img.resize((int(img.width * scale), int(img.height * scale)), Image.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_perceptual_hash_is_hex_and_accepts_bytes_and_paths(tmp_path):
    img = _lesion(1)
    h = perceptual_hash(img)
    assert len(h) == 16 and int(h, 16) >= 0
    img.save(tmp_path / "a.png")
    assert perceptual_hash(tmp_path / "a.png") == h
    assert perceptual_hash((tmp_path / "a.png").read_bytes()) == h
    with pytest.raises(TypeError):
        perceptual_hash(42)


def test_resized_recompressed_copy_is_a_duplicate_and_others_are_not():
    originals = [_lesion(seed) for seed in range(8)]
    copy = _recompress(originals[3])
    hashes = [perceptual_hash(im) for im in originals] + [perceptual_hash(copy)]
    assert hash_distance(hashes[3], hashes[-1]) <= 6
    df = pd.DataFrame(
        {
            "isic_id": [f"ISIC_{i:07d}" for i in range(8)] + ["ISIC_0000099"],
            "pull_id": ["p1"] * 8 + ["p2"],  # the copy came in a later pull
            "phash": hashes,
        }
    )

    out = find_duplicates(df)

    assert out["is_duplicate"].tolist() == [False] * 8 + [True]
    assert out["duplicate_group"].iloc[3] == out["duplicate_group"].iloc[8] == "dup:ISIC_0000003"
    assert out["duplicate_group"].drop(index=[3, 8]).isna().all()


def test_keeper_prefers_readable_accepted_then_smallest_id():
    df = pd.DataFrame(
        {
            "isic_id": ["ISIC_3", "ISIC_1", "ISIC_2"],
            "phash": ["ffff000000000000"] * 3,
            "verdict": ["accepted", "needs_review", "accepted"],
            "readable": [True, True, False],
        }
    )
    out = find_duplicates(df)
    assert out["is_duplicate"].tolist() == [False, True, True]
    assert set(out["duplicate_group"]) == {"dup:ISIC_3"}


def test_missing_hashes_are_never_duplicates_and_bad_hashes_raise():
    df = pd.DataFrame({"isic_id": ["a", "b", "c"], "phash": [None, "00ff00ff00ff00ff", None]})
    out = find_duplicates(df)
    assert not out["is_duplicate"].any() and out["duplicate_group"].isna().all()
    with pytest.raises(ValueError, match="64-bit hash"):
        find_duplicates(pd.DataFrame({"isic_id": ["a"], "phash": ["abc"]}))
    with pytest.raises(ValueError, match="column 'nope'"):
        find_duplicates(df, hash_column="nope")


def test_ten_thousand_rows_quickly():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, size=10_000, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    hashes = [f"{int(v):016x}" for v in values]
    hashes[9_999] = hashes[17][:-1] + ("0" if hashes[17][-1] != "0" else "1")  # near copy
    df = pd.DataFrame({"isic_id": [f"ISIC_{i:07d}" for i in range(10_000)], "phash": hashes})
    start = time.perf_counter()
    out = find_duplicates(df)
    assert time.perf_counter() - start < 10
    assert out["is_duplicate"].sum() == 1 and out["is_duplicate"].iloc[9_999]


def test_real_images_are_distinct_and_survive_recompression(shared_data):
    files = sorted((shared_data / "phone").glob("*.jpg"))[:30]
    images = [Image.open(f) for f in files]
    df = pd.DataFrame(
        {
            "isic_id": [f.stem for f in files] + ["copy"],
            "phash": [perceptual_hash(im) for im in images]
            + [perceptual_hash(_recompress(images[0]))],
        }
    )
    out = find_duplicates(df)
    assert out.loc[out["is_duplicate"], "isic_id"].tolist() == ["copy"]

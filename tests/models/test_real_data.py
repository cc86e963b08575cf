"""Checks on the real development images in ../shared/data (skipped when absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from models import assess_quality, decode_image, encode_metadata, metadata_problems

from .conftest import DATA


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    if not (DATA / "manifest.csv").exists():
        pytest.skip(f"real data not present at {DATA}")
    return pd.read_csv(DATA / "manifest.csv")


def test_real_photos_decode_and_mostly_pass_quality(manifest):
    sample = manifest.groupby("kind").sample(15, random_state=0)
    verdicts = []
    for file in sample["file"]:
        decoded = decode_image((DATA / file).read_bytes(), target=224)
        assert decoded.format == "JPEG" and decoded.image.mode == "RGB"
        verdicts.append(assess_quality(decoded))
    assert verdicts.count("ok") >= 28, verdicts


def test_real_metadata_encodes_without_unexpected_problems(manifest):
    records = manifest[["age", "sex", "site"]].to_dict("records")
    assert encode_metadata(records).shape == (len(records), 14)
    problems = {p for r in records for p in metadata_problems(r)}
    assert not problems

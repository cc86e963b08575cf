from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models import METADATA_DIM, SITES, encode_metadata, metadata_problems
from models.metadata import normalize_site

from .conftest import DATA

AGE, AGE_MISSING, MALE, FEMALE, SEX_MISSING = range(5)
SITE0 = 5
SITE_MISSING = SITE0 + len(SITES)


def test_layout_and_full_record():
    assert METADATA_DIM == 14
    row = encode_metadata(
        [{"age_approx": 55, "sex": "female", "anatom_site_general": "palms/soles"}]
    )
    assert row.dtype == np.float32 and row.shape == (1, METADATA_DIM)
    expected = np.zeros(METADATA_DIM, np.float32)
    expected[[AGE, FEMALE, SITE0 + SITES.index("palms/soles")]] = [0.55, 1, 1]
    np.testing.assert_array_equal(row[0], expected)


def test_empty_and_none_records_are_all_missing():
    rows = encode_metadata([{}, None, {"age": None, "sex": float("nan"), "site": ""}])
    for row in rows:
        assert row[[AGE_MISSING, SEX_MISSING, SITE_MISSING]].tolist() == [1, 1, 1]
        assert row.sum() == 3


@pytest.mark.parametrize(
    "record",
    [
        {"age": "abc", "sex": "x", "site": "elbow pit"},
        {"age": -5, "sex": "unknownish", "site": 12},
        {"age": 300, "sex": True, "site": "marsupium"},
    ],
)
def test_bad_values_become_missing_and_are_reported(record):
    row = encode_metadata([record])[0]
    assert row[[AGE_MISSING, SEX_MISSING, SITE_MISSING]].tolist() == [1, 1, 1]
    problems = metadata_problems(record)
    assert len(problems) == 3
    assert "age" in problems[0] and "sex" in problems[1] and "site" in problems[2]


def test_plain_missing_words_are_not_problems():
    assert metadata_problems({"age": "", "sex": "unknown", "site": "unknown"}) == []
    assert metadata_problems({"age": 40, "sex": "MALE", "site": "FOREARM"}) == []
    assert metadata_problems(None) == []


def test_key_aliases_and_case():
    a = encode_metadata([{"age": "63", "sex": "MALE", "site": "FOREARM"}])
    b = encode_metadata(
        [{"age_approx": 63.0, "sex": "male", "anatom_site_general": "upper extremity"}]
    )
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("text", "sites"),
    [
        ("FACE", ("head/neck",)),
        ("head_neck_face", ("head/neck",)),
        ("lower_extremity", ("lower extremity",)),
        ("BACK", ("posterior torso",)),
        ("CHEST", ("anterior torso",)),
        ("acral", ("palms/soles",)),
        ("genital", ("oral/genital",)),
        ("SHIN", ("lower extremity",)),
        ("hand", ("upper extremity",)),
        ("unknown", ()),
    ],
)
def test_site_aliases(text, sites):
    assert normalize_site(text) == sites


def test_trunk_spreads_weight_over_torso_sites():
    row = encode_metadata([{"site": "trunk"}])[0]
    torso = [SITE0 + SITES.index(s) for s in ("anterior torso", "posterior torso", "lateral torso")]
    assert math.isclose(row[torso].sum(), 1.0, rel_tol=1e-6) and row[SITE_MISSING] == 0


def test_every_real_site_value_is_known():
    if not DATA.exists():
        pytest.skip(f"real data not present at {DATA}")
    values = set(pd.read_csv(DATA / "manifest.csv")["site"].dropna())
    values |= set(pd.read_csv(DATA / "isic-metadata" / "milk10k_metadata.csv")["site"].dropna())
    unknown = {v for v in values if not normalize_site(v) and v != "unknown"}
    assert not unknown

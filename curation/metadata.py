"""Parse isic-cli's metadata.csv into the canonical image table."""

from __future__ import annotations

import math
from os import PathLike
from typing import IO

import pandas as pd

from curation._columns import CANONICAL_COLUMNS, clean_text, ensure_canonical

__all__ = ["read_isic_metadata", "isic_metadata_to_canonical"]

_DIAGNOSIS_LEVELS = tuple(f"diagnosis_{level}" for level in range(5, 0, -1))
_MALIGNANT_BY_LEVEL_1 = {"Malignant": 1.0, "Benign": 0.0}


def read_isic_metadata(
    path_or_buffer: str | PathLike[str] | IO[str], *, source: str | None = "isic"
) -> pd.DataFrame:
    """Read an isic-cli metadata.csv (flat keys) into the canonical columns.

    `malignant` is 1.0/0.0 from diagnosis_1 Malignant/Benign (NaN for Indeterminate or missing);
    `diagnosis` is the most specific diagnosis_N present.
    """
    # Everything as text: isic-cli writes Python str() of each value, empty for None.
    raw = pd.read_csv(path_or_buffer, dtype=str, keep_default_na=False, encoding="utf-8")
    if "isic_id" not in raw.columns:
        raise ValueError(f"ISIC metadata needs an 'isic_id' column; found {sorted(raw.columns)}")
    return isic_metadata_to_canonical(raw, source=source)


def isic_metadata_to_canonical(raw: pd.DataFrame, *, source: str | None = "isic") -> pd.DataFrame:
    """Map an already-loaded metadata.csv table (flat ISIC keys) to the canonical columns."""
    out = pd.DataFrame(index=raw.index)
    for column in CANONICAL_COLUMNS:
        if column in raw.columns:
            out[column] = raw[column]
    out["diagnosis"] = [_most_specific_diagnosis(row) for row in raw.to_dict("records")]
    level_1 = raw["diagnosis_1"] if "diagnosis_1" in raw.columns else [None] * len(raw)
    out["malignant"] = [_MALIGNANT_BY_LEVEL_1.get(clean_text(v) or "", math.nan) for v in level_1]
    if "source" not in raw.columns:
        out["source"] = source
    out = ensure_canonical(out)
    return out.loc[:, list(CANONICAL_COLUMNS)].reset_index(drop=True)


def _most_specific_diagnosis(row: dict) -> str | None:
    for column in _DIAGNOSIS_LEVELS:
        value = clean_text(row.get(column))
        if value is not None:
            return value
    return None

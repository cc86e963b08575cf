"""Canonical image-table columns shared by curation, models and workers (see CONTRACTS.md)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

CANONICAL_COLUMNS: tuple[str, ...] = (
    "isic_id",
    "key",
    "pull_id",
    "source",
    "attribution",
    "copyright_license",
    "image_type",
    "dermoscopic_type",
    "age_approx",
    "sex",
    "anatom_site_general",
    "diagnosis",
    "malignant",
    "patient_id",
    "lesion_id",
)
FLOAT_COLUMNS = frozenset({"age_approx", "malignant"})


def clean_text(value: Any) -> str | None:
    """A stripped string, or None for missing/empty/NaN values."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    text = str(value).strip()
    return text or None


def clean_sex(value: Any) -> str | None:
    text = clean_text(value)
    if text is None:
        return None
    text = text.lower()
    return text if text in ("male", "female") else None


def to_float(value: Any) -> float:
    """A float, NaN for missing or unparsable values."""
    text = clean_text(value)
    if text is None:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def text_series(values: Any, index: pd.Index | None = None) -> pd.Series:
    """Object-dtype Series of str|None (pandas 3 would otherwise turn None into NaN)."""
    return pd.Series([clean_text(v) for v in values], index=index, dtype=object)


def normalise_text_columns(df: pd.DataFrame, columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Return a copy where the given columns are object dtype holding str or None."""
    out = df.copy()
    for column in columns:
        if column in out.columns:
            out[column] = text_series(out[column], index=out.index)
    return out


def ensure_canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing canonical columns and coerce their dtypes; other columns are kept."""
    out = df.copy()
    for column in CANONICAL_COLUMNS:
        if column not in out.columns:
            out[column] = math.nan if column in FLOAT_COLUMNS else None
    for column in CANONICAL_COLUMNS:
        if column in FLOAT_COLUMNS:
            out[column] = pd.Series(
                [to_float(v) for v in out[column]], index=out.index, dtype=float
            )
        elif column == "sex":
            out[column] = pd.Series(
                [clean_sex(v) for v in out[column]], index=out.index, dtype=object
            )
        else:
            out[column] = text_series(out[column], index=out.index)
    return out

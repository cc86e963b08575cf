"""Grouped, stable train/val/test assignment."""

from __future__ import annotations

import hashlib
import math

import pandas as pd

from curation._columns import clean_text

__all__ = ["SPLITS", "assign_splits", "split_group_keys"]

SPLITS = ("train", "val", "test")


def split_group_keys(df: pd.DataFrame) -> pd.Series:
    """The grouping key per row: patient_id, else lesion_id, else isic_id (prefixed by kind)."""
    keys = []
    for row in df.to_dict("records"):
        for column, prefix in (
            ("patient_id", "patient"),
            ("lesion_id", "lesion"),
            ("isic_id", "image"),
        ):
            value = clean_text(row.get(column))
            if value is not None:
                keys.append(f"{prefix}:{value}")
                break
        else:
            raise ValueError(f"row has no patient_id, lesion_id or isic_id: {row}")
    return pd.Series(keys, index=df.index, dtype=object)


def assign_splits(
    df: pd.DataFrame,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    salt: str = "birthmark-v1",
) -> pd.Series:
    """ "train"|"val"|"test" per row from a salted sha256 of the row's group key.

    All rows of a patient (else lesion, else image) land in one split, and a group's split never
    changes when rows are added or the table is reordered.
    """
    if len(fractions) != 3 or any(f < 0 or math.isnan(f) for f in fractions):
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
    total = sum(fractions)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {total:g})")
    train_end = fractions[0]
    val_end = fractions[0] + fractions[1]
    splits = []
    for key in split_group_keys(df):
        u = _uniform(f"{salt}\x00{key}")
        splits.append("train" if u < train_end else "val" if u < val_end else "test")
    return pd.Series(splits, index=df.index, dtype=object, name="split")


def _uniform(text: str) -> float:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64

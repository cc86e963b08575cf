"""Grouped, stable train/val/test assignment."""

from __future__ import annotations

import hashlib
import math

import pandas as pd

from curation._columns import clean_text

__all__ = ["SPLITS", "assign_splits", "split_group_keys"]

SPLITS = ("train", "val", "test")


def split_group_keys(df: pd.DataFrame) -> pd.Series:
    """The grouping key per row: its patient, else its lesion, else its image (prefixed by kind).

    Rows that share a patient_id or a lesion_id are one group, transitively: a lesion photographed
    twice with the patient_id recorded on only one of the rows (two sources, or metadata filled in
    later) stays whole, and so does its patient. A group is named after the smallest patient_id
    in it, else the smallest lesion_id, else its isic_id, so where every row of a lesion carries
    the same ids the key is that row's patient_id, else lesion_id, as it always was.
    """
    ids: list[tuple[str | None, str | None, str | None]] = []
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for row in df.to_dict("records"):
        patient, lesion, image = (
            clean_text(row.get(c)) for c in ("patient_id", "lesion_id", "isic_id")
        )
        if patient is None and lesion is None and image is None:
            raise ValueError(f"row has no patient_id, lesion_id or isic_id: {row}")
        ids.append((patient, lesion, image))
        nodes = [f"patient:{patient}"] if patient is not None else []
        nodes += [f"lesion:{lesion}"] if lesion is not None else []
        for node in nodes:
            parent.setdefault(node, node)
        if len(nodes) == 2:
            a, b = find(nodes[0]), find(nodes[1])
            if a != b:
                parent[b] = a  # which root stays does not matter: names are chosen below
    names: dict[str, str] = {}
    for node in parent:  # the smallest patient, else the smallest lesion, names its group
        root = find(node)
        if root not in names or _rank(node) < _rank(names[root]):
            names[root] = node
    keys = [
        names[find(f"patient:{p}" if p is not None else f"lesion:{le}")]
        if p is not None or le is not None
        else f"image:{image}"
        for p, le, image in ids
    ]
    return pd.Series(keys, index=df.index, dtype=object)


def _rank(node: str) -> tuple[bool, str]:
    return (not node.startswith("patient:"), node)


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

"""Curated manifests: build one from the per-image table, version, diff, summarise, serialise."""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curation._columns import CANONICAL_COLUMNS, FLOAT_COLUMNS, clean_text, ensure_canonical
from curation.dedupe import find_duplicates
from curation.licences import flag_licences
from curation.reviews import Decision, apply_reviews
from curation.splits import assign_splits

__all__ = [
    "MANIFEST_COLUMNS",
    "build_manifest",
    "diff_manifests",
    "manifest_from_parquet",
    "manifest_to_parquet",
    "manifest_version",
    "summarize_manifest",
]

MANIFEST_COLUMNS: tuple[str, ...] = (
    *CANONICAL_COLUMNS,
    "phash",
    "duplicate_group",
    "is_duplicate",
    "licence_ok",
    "licence_note",
    "readable",
    "unreadable_reason",
    "phone_score",
    "phone_verdict",
    "phone_reasons",
    "auto_verdict",
    "review_decision",
    "verdict",
    "split",
    "included",
)
_BOOL_COLUMNS = ("is_duplicate", "licence_ok", "readable", "included")
_MANIFEST_FLOATS = frozenset({*FLOAT_COLUMNS, "phone_score"})
_TEXT_COLUMNS = tuple(
    c for c in MANIFEST_COLUMNS if c not in _BOOL_COLUMNS and c not in _MANIFEST_FLOATS
)
VERDICTS = ("accepted", "rejected", "needs_review")
VERSION_CHARS = 12


def build_manifest(
    images: pd.DataFrame,
    *,
    reviews: Iterable[Decision] = (),
    max_distance: int = 6,
    allowed_licences: Sequence[str] = ("CC-0", "CC-BY"),
    require_licence: bool = False,
    include_verdicts: Collection[str] | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> pd.DataFrame:
    """The curated manifest (MANIFEST_COLUMNS, then any extra input columns), sorted by isic_id.

    `images` is the per-image table (canonical columns; phash, readable and phone_score/
    phone_verdict/phone_reasons as computed by the caller). Reviews override the automatic
    verdict; `included` = readable, not a duplicate, label known (and the licence allowed when
    `require_licence`, and the verdict in `include_verdicts` when given).
    """
    if "isic_id" not in images.columns:
        raise ValueError(f"images need an 'isic_id' column; found {list(images.columns)}")
    df = ensure_canonical(images)
    for column in ("phash", "unreadable_reason", "phone_verdict"):
        if column not in df.columns:
            df[column] = None
    if "readable" not in df.columns:
        df["readable"] = True
    df["readable"] = df["readable"].map(_truthy).astype(bool)
    df["phone_score"] = (
        pd.to_numeric(df["phone_score"], errors="coerce").astype(float)
        if "phone_score" in df.columns
        else math.nan
    )
    reasons = df["phone_reasons"] if "phone_reasons" in df.columns else [None] * len(df)
    df["phone_reasons"] = pd.Series(
        [_join_reasons(r) for r in reasons], index=df.index, dtype=object
    )
    df["auto_verdict"] = [clean_text(v) or "needs_review" for v in df["phone_verdict"]]
    df = apply_reviews(df, reviews)
    df = find_duplicates(df, max_distance=max_distance)
    df = flag_licences(df, allowed=allowed_licences)
    df["split"] = assign_splits(df, fractions=fractions)
    included = df["readable"] & ~df["is_duplicate"] & df["malignant"].notna()
    if require_licence:
        included &= df["licence_ok"]
    if include_verdicts is not None:
        included &= df["verdict"].isin(list(include_verdicts))
    df["included"] = included.astype(bool)
    return _order(_normalise(df))


def manifest_version(df: pd.DataFrame) -> str:
    """Short content hash: the same rows (in any order, any column order) give the same version."""
    columns = sorted(df.columns)
    lines = sorted(
        json.dumps([_canonical_value(row[c]) for c in columns], ensure_ascii=False)
        for row in df.to_dict("records")
    )
    digest = hashlib.sha256()
    digest.update(json.dumps(columns).encode())
    for line in lines:
        digest.update(b"\n" + line.encode("utf-8"))
    return digest.hexdigest()[:VERSION_CHARS]


def diff_manifests(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Per isic_id: change in {added, removed, verdict_changed} with old_verdict/new_verdict."""
    old_verdicts = _verdicts_by_id(old)
    new_verdicts = _verdicts_by_id(new)
    rows = []
    for isic_id in sorted(set(old_verdicts) | set(new_verdicts)):
        before, after = old_verdicts.get(isic_id, _ABSENT), new_verdicts.get(isic_id, _ABSENT)
        if before is _ABSENT:
            change = "added"
        elif after is _ABSENT:
            change = "removed"
        elif before != after:
            change = "verdict_changed"
        else:
            continue
        rows.append(
            {
                "isic_id": isic_id,
                "change": change,
                "old_verdict": None if before is _ABSENT else before,
                "new_verdict": None if after is _ABSENT else after,
            }
        )
    columns = ["isic_id", "change", "old_verdict", "new_verdict"]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def summarize_manifest(df: pd.DataFrame) -> dict[str, Any]:
    """JSON-ready counts: rows, included, by verdict/split/licence, duplicates, review backlog."""

    def counts(column: str) -> dict[str, int]:
        if column not in df.columns:
            return {}
        values = df[column].map(lambda v: clean_text(v) or "(none)")
        return {str(k): int(v) for k, v in sorted(values.value_counts().items())}

    def count_true(column: str) -> int:
        return int(df[column].map(_truthy).sum()) if column in df.columns else 0

    verdicts = df["verdict"] if "verdict" in df.columns else pd.Series(dtype=object)
    reviewed = df["review_decision"].notna() if "review_decision" in df.columns else None
    backlog = verdicts == "needs_review"
    if "is_duplicate" in df.columns:
        backlog &= ~df["is_duplicate"].map(_truthy).astype(bool)
    if reviewed is not None:
        backlog &= ~reviewed
    return {
        "version": manifest_version(df),
        "rows": len(df),
        "included": count_true("included"),
        "by_verdict": {v: int((verdicts == v).sum()) for v in VERDICTS},
        "by_auto_verdict": counts("auto_verdict"),
        "by_split": counts("split"),
        "included_by_split": (
            counts_in(df.loc[df["included"].map(_truthy)], "split") if "included" in df else {}
        ),
        "by_licence": counts("copyright_license"),
        "licence_not_ok": len(df) - count_true("licence_ok") if "licence_ok" in df else 0,
        "duplicates": count_true("is_duplicate"),
        "duplicate_groups": int(df["duplicate_group"].nunique()) if "duplicate_group" in df else 0,
        "unreadable": len(df) - count_true("readable") if "readable" in df else 0,
        "label_unknown": int(df["malignant"].isna().sum()) if "malignant" in df else 0,
        "malignant": int((df["malignant"] == 1.0).sum()) if "malignant" in df else 0,
        "phone_like": int((verdicts == "accepted").sum()),
        "not_phone_like": int((verdicts == "rejected").sum()),
        "reviewed": int(reviewed.sum()) if reviewed is not None else 0,
        "review_backlog": int(backlog.sum()),
    }


def counts_in(df: pd.DataFrame, column: str) -> dict[str, int]:
    values = df[column].map(lambda v: clean_text(v) or "(none)")
    return {str(k): int(v) for k, v in sorted(values.value_counts().items())}


def manifest_to_parquet(df: pd.DataFrame) -> bytes:
    """Parquet bytes (pyarrow, no pandas index)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def manifest_from_parquet(data: bytes) -> pd.DataFrame:
    """Inverse of manifest_to_parquet, with the manifest dtypes restored (str|None, bool, float)."""
    df = pq.read_table(io.BytesIO(data)).to_pandas()
    return _normalise(df)


# --- helpers ---

_ABSENT = object()


def _verdicts_by_id(df: pd.DataFrame) -> dict[str, Any]:
    if "isic_id" not in df.columns:
        raise ValueError(f"manifest needs an 'isic_id' column; found {list(df.columns)}")
    verdicts = df["verdict"] if "verdict" in df.columns else [None] * len(df)
    out: dict[str, Any] = {}
    for isic_id, verdict in zip(df["isic_id"], verdicts, strict=True):
        out.setdefault(str(isic_id), clean_text(verdict))
    return out


def _truthy(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _join_reasons(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Iterable) and not isinstance(value, bytes):
        items = [str(v).strip() for v in value if clean_text(v) is not None]
        return "; ".join(items) or None
    return clean_text(value)


def _canonical_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        return None if math.isnan(number) else repr(number)
    if hasattr(value, "item"):  # numpy scalar
        return _canonical_value(value.item())
    return str(value)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for column in _TEXT_COLUMNS:
        if column in out.columns:
            out[column] = pd.Series(
                [clean_text(v) for v in out[column]], index=out.index, dtype=object
            )
    for column in _BOOL_COLUMNS:
        if column in out.columns:
            out[column] = out[column].map(_truthy).astype(bool)
    for column in _MANIFEST_FLOATS:
        if column in out.columns:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    return out


def _order(df: pd.DataFrame) -> pd.DataFrame:
    extras = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    out = df.loc[:, [*MANIFEST_COLUMNS, *extras]]
    keys = {
        f"_sort_{c}": [("" if v is None else str(v)) for v in out[c]]
        for c in ("isic_id", "pull_id", "key")
    }
    ordered = out.assign(**keys).sort_values(list(keys), kind="stable")
    return ordered.drop(columns=list(keys)).reset_index(drop=True)

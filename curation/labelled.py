"""Import a local labelled image folder (its manifest.csv) as a pull."""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import pandas as pd

from curation._columns import CANONICAL_COLUMNS, clean_text, ensure_canonical, to_float
from curation._images import unreadable_reason
from curation.metadata import isic_metadata_to_canonical

__all__ = [
    "REQUIRED_MANIFEST_COLUMNS",
    "fill_licences",
    "parse_licence_rules",
    "plan_import",
    "read_labelled_manifest",
]

REQUIRED_MANIFEST_COLUMNS = ("file", "image_id", "malignant")
_IMAGE_TYPE_BY_KIND = {"phone": "clinical: close-up", "dermoscopic": "dermoscopic"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".tif", ".tiff", ".bmp")


def read_labelled_manifest(path: str | PathLike[str]) -> pd.DataFrame:
    """Read a labelled folder's manifest into the canonical columns plus `file` and `kind`.

    Native format: file, kind, source, image_id, diagnosis, malignant, age, sex, site, patient_id,
    lesion_id (file, image_id, malignant required). An isic-cli metadata.csv (isic_id, no file
    column) is accepted too; its `file` is `<isic_id>.jpg` or another image with that stem.
    """
    path = Path(path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    if "isic_id" in raw.columns and "file" not in raw.columns:
        df = isic_metadata_to_canonical(raw, source=None)
        df["file"] = [_find_by_stem(path.parent, isic_id) for isic_id in df["isic_id"]]
        df["kind"] = None
        return _finish(df)
    missing = [c for c in REQUIRED_MANIFEST_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(
            f"manifest {path} lacks required column(s) {', '.join(missing)}; "
            f"found columns: {', '.join(raw.columns) or '(none)'}"
        )
    df = pd.DataFrame(index=raw.index)
    df["isic_id"] = raw["image_id"]
    df["file"] = raw["file"]
    df["source"] = raw["source"] if "source" in raw.columns else None
    df["diagnosis"] = raw["diagnosis"] if "diagnosis" in raw.columns else None
    df["malignant"] = [_label(v) for v in raw["malignant"]]
    for target, column in (
        ("age_approx", "age"),
        ("sex", "sex"),
        ("anatom_site_general", "site"),
        ("patient_id", "patient_id"),
        ("lesion_id", "lesion_id"),
        ("attribution", "attribution"),
        ("copyright_license", "copyright_license"),
    ):
        df[target] = raw[column] if column in raw.columns else None
    if "kind" in raw.columns:
        df["kind"] = raw["kind"]
        df["image_type"] = [_IMAGE_TYPE_BY_KIND.get(clean_text(k) or "") for k in raw["kind"]]
    else:
        df["kind"] = None
    return _finish(df)


def parse_licence_rules(rules: Sequence[str]) -> dict[str, str]:
    """``["HAM10000=CC-BY-NC", "CC-BY"]`` -> ``{"HAM10000": "CC-BY-NC", "*": "CC-BY"}``.

    ``SOURCE=LICENCE`` applies to rows of that ``source``; a bare ``LICENCE`` to every other row.
    """
    out: dict[str, str] = {}
    for rule in rules:
        source, sep, licence = rule.rpartition("=")
        source, licence = (source.strip() if sep else "*"), licence.strip()
        if not licence or (sep and not source):
            raise ValueError(f"licence rule {rule!r} is not SOURCE=LICENCE or LICENCE")
        if source in out and out[source] != licence:
            raise ValueError(f"two licences for {source}: {out[source]} and {licence}")
        out[source] = licence
    return out


def fill_licences(df: pd.DataFrame, rules: dict[str, str]) -> pd.DataFrame:
    """Copy of ``df`` with ``copyright_license`` set by ``rules`` where the manifest left it empty.

    A licence the manifest states is kept: the rules only fill gaps (by ``source``, then ``*``).
    """
    out = df.copy()
    if not rules:
        return out
    missing = pd.Series(None, index=out.index, dtype=object)
    sources = out.get("source", missing)
    current = out.get("copyright_license", missing)
    filled = []
    for given, source in zip(current, sources, strict=True):
        given = clean_text(given)
        source = clean_text(source)
        filled.append(given or rules.get(source or "", rules.get("*")))
    out["copyright_license"] = pd.Series(filled, index=out.index, dtype=object)
    return out


def plan_import(folder: str | PathLike[str], manifest: pd.DataFrame) -> pd.DataFrame:
    """Resolve each row's file under `folder` and check it decodes.

    Adds `path` (absolute str or None), `readable` (bool) and `unreadable_reason` (str or None).
    Files that resolve outside `folder` are refused, so a manifest cannot reach elsewhere.
    """
    if "file" not in manifest.columns:
        raise ValueError(f"manifest needs a 'file' column; found {list(manifest.columns)}")
    root = Path(folder).resolve()
    paths: list[str | None] = []
    readable: list[bool] = []
    reasons: list[str | None] = []
    for file in manifest["file"]:
        name = clean_text(file)
        if name is None:
            paths.append(None)
            readable.append(False)
            reasons.append("no file named in manifest")
            continue
        candidate = (root / name).resolve()
        if not candidate.is_relative_to(root):
            paths.append(None)
            readable.append(False)
            reasons.append(f"file {name!r} is outside {root}")
            continue
        reason = unreadable_reason(candidate)
        paths.append(str(candidate))
        readable.append(reason is None)
        reasons.append(reason)
    out = manifest.copy()
    out["path"] = pd.Series(paths, index=out.index, dtype=object)
    out["readable"] = pd.Series(readable, index=out.index, dtype=bool)
    out["unreadable_reason"] = pd.Series(reasons, index=out.index, dtype=object)
    return out


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    df = ensure_canonical(df)
    df["file"] = pd.Series([clean_text(v) for v in df["file"]], index=df.index, dtype=object)
    df["kind"] = pd.Series([clean_text(v) for v in df["kind"]], index=df.index, dtype=object)
    ids = df["isic_id"]
    if ids.isna().any():
        rows = [int(i) + 2 for i in df.index[ids.isna()][:5]]  # +2: header line, 1-based
        raise ValueError(f"manifest rows without an image id at lines {rows}")
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise ValueError(f"manifest image ids must be unique; repeated: {duplicated[:5]}")
    return df.loc[:, [*CANONICAL_COLUMNS, "file", "kind"]].reset_index(drop=True)


def _label(value: object) -> float:
    number = to_float(value)
    if math.isnan(number):
        text = (clean_text(value) or "").lower()
        return {"true": 1.0, "false": 0.0, "malignant": 1.0, "benign": 0.0}.get(text, math.nan)
    return number if number in (0.0, 1.0) else math.nan


def _find_by_stem(folder: Path, stem: str, suffixes: Sequence[str] = _IMAGE_SUFFIXES) -> str:
    if (folder / f"{stem}.jpg").is_file():
        return f"{stem}.jpg"
    for candidate in sorted(folder.glob(f"{stem}.*")):
        if candidate.suffix.lower() in suffixes and candidate.is_file():
            return candidate.name
    return f"{stem}.jpg"  # reported missing by plan_import

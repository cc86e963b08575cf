"""Pulls in the store: ``raw/isic/<pull_id>/`` holding images, isic-cli's files, ``images.csv``
(the canonical per-image table with store keys) and ``pull.json``, written last as the
"complete" marker. Both isic-cli pulls and imported local sets land here the same way."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

import curation
from workers.store import InvalidKey, Store, validate_key

__all__ = [
    "RAW_PREFIX",
    "list_pulls",
    "read_pull_images",
    "stored_image_keys",
    "store_isic_download",
    "import_folder",
    "run_isic_pull",
]

RAW_PREFIX = "raw/isic/"
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".heic",
    ".heif",
    ".tif",
    ".tiff",
    ".gif",
    ".bmp",
}


def list_pulls(store: Store) -> list[dict[str, Any]]:
    """Complete pulls (those with a pull.json), oldest first."""
    pulls = [
        json.loads(store.get(o.key))
        for o in store.list(RAW_PREFIX)
        if o.key.endswith("/pull.json") and o.key.count("/") == 3
    ]
    return sorted(pulls, key=lambda p: p["created_at"])


def read_pull_images(store: Store, pull_id: str) -> pd.DataFrame:
    """A pull's images.csv as written: every cell text (empty = missing).

    Inferred types rewrote provenance: patient_id ``007`` came back as ``7.0`` (a float column
    once one row was empty, an int otherwise, so a patient's split key changed with the pulls
    chosen) and a diagnosis ``NA`` as missing. Numbers are parsed where they are meant to be
    (``curation``'s canonical columns).
    """
    return pd.read_csv(
        io.BytesIO(store.get(f"{RAW_PREFIX}{pull_id}/images.csv")),
        dtype=str,
        keep_default_na=False,
        na_values=[""],
    )


def stored_image_keys(store: Store) -> dict[str, str]:
    """isic_id -> key of an image already stored by any complete pull."""
    keys: dict[str, str] = {}
    for pull in list_pulls(store):
        df = read_pull_images(store, pull["pull_id"])
        for isic_id, key in zip(df["isic_id"], df["key"], strict=True):
            if isinstance(key, str):
                keys.setdefault(isic_id, key)
    return keys


def _write_table_and_record(store: Store, pull_id: str, table: pd.DataFrame, record: dict) -> dict:
    store.put(f"{RAW_PREFIX}{pull_id}/images.csv", table.to_csv(index=False).encode())
    record = {"pull_id": pull_id, "created_at": time.time(), **record}
    store.put(f"{RAW_PREFIX}{pull_id}/pull.json", json.dumps(record, indent=2).encode())
    return record


def store_isic_download(
    store: Store,
    pull_id: str,
    download: curation.IsicDownload,
    *,
    query: dict[str, Any],
    on_image: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Upload what isic-cli wrote; images stored by an earlier pull are not uploaded again."""
    existing = stored_image_keys(store)
    table = download.metadata.copy()
    keys, skipped, uploaded = [], 0, 0
    total = len(table)
    for i, isic_id in enumerate(table["isic_id"]):
        path = download.images.get(isic_id)
        if path is None:
            keys.append(None)
        elif isic_id in existing:
            keys.append(existing[isic_id])
            skipped += 1
        else:
            key = f"{RAW_PREFIX}{pull_id}/{path.name}"
            store.put(key, path.read_bytes())
            keys.append(key)
            uploaded += 1
        if on_image:
            on_image(i + 1, total)
    table["key"] = keys
    table["pull_id"] = pull_id
    out = Path(download.outdir)
    for extra in [
        "metadata.csv",
        "attribution.txt",
        *(p.relative_to(out).as_posix() for p in out.glob("licenses/*")),
    ]:
        if (out / extra).is_file():
            store.put(f"{RAW_PREFIX}{pull_id}/{extra}", (out / extra).read_bytes())
    return _write_table_and_record(
        store,
        pull_id,
        table,
        {
            "kind": "isic",
            "query": query,
            "isic_cli_version": download.isic_cli_version,
            "counts": {
                "listed": total,
                "uploaded": uploaded,
                "already_stored": skipped,
                "missing": len(download.missing),
            },
            "missing": list(download.missing),
        },
    )


def run_isic_pull(
    store: Store,
    pull_id: str,
    *,
    search: str,
    limit: int,
    collections: str | None,
    api_url: str | None,
    timeout: float,
    on_image: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """isic-cli into a temporary folder, then into the store; nothing marked complete on failure.

    ``should_stop`` stops isic-cli (see ``curation.download_images``)."""
    tmp = Path(tempfile.mkdtemp(prefix="birthmark-pull-"))
    try:
        download = curation.download_images(
            tmp / "out",
            search=search,
            limit=limit,
            collections=collections,
            api_url=api_url,
            timeout=timeout,
            should_stop=should_stop,
        )
        query = {"search": search, "limit": limit, "collections": collections}
        return store_isic_download(store, pull_id, download, query=query, on_image=on_image)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_image_ids(ids: pd.Series, pull_id: str) -> None:
    """Refuse image ids that cannot name a stored file (``..``, control characters, ...)."""
    bad = []
    for isic_id in ids:
        try:
            validate_key(f"{RAW_PREFIX}{pull_id}/{isic_id}.jpg")
        except InvalidKey:
            bad.append(isic_id)
    if bad:
        raise ValueError(
            f"{len(bad)} image id(s) cannot name a stored file (no '.' or '..' path segments, "
            f"backslashes or control characters): {bad[:5]}"
        )


def import_folder(
    store: Store,
    folder: Path,
    *,
    manifest: Path | None = None,
    licences: Mapping[str, str] | None = None,
    on_image: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Bring a local labelled folder in as a pull; returns (record, created).

    The pull id is a content hash of the manifest, file sizes and licence rules, so re-importing
    is a no-op. ``licences`` fills licences the manifest leaves empty (see
    ``curation.fill_licences``). Images are uploaded before the table and the record, so nothing
    is half-imported.
    """
    folder = Path(folder)
    if manifest is None:  # ours, else the metadata.csv of an isic-cli download
        found = [folder / n for n in ("manifest.csv", "metadata.csv") if (folder / n).is_file()]
        manifest = found[0] if found else folder / "manifest.csv"
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ValueError(f"no manifest.csv or metadata.csv in {folder}; pass --manifest CSV")
    table = curation.read_labelled_manifest(manifest)
    table = curation.fill_licences(table, dict(licences or {}))
    table = curation.plan_import(folder, table)
    digest = hashlib.sha256(manifest.read_bytes())
    if licences:
        digest.update(json.dumps(dict(licences), sort_keys=True).encode())
    for p in table["path"]:
        size = Path(p).stat().st_size if isinstance(p, str) and Path(p).exists() else -1
        digest.update(f"{p}:{size}".encode())
    pull_id = f"import-{digest.hexdigest()[:12]}"
    if store.exists(f"{RAW_PREFIX}{pull_id}/pull.json"):
        return json.loads(store.get(f"{RAW_PREFIX}{pull_id}/pull.json")), False
    _check_image_ids(table["isic_id"], pull_id)  # before any upload: all or nothing
    keys = []
    total = len(table)
    for i, (isic_id, path) in enumerate(zip(table["isic_id"], table["path"], strict=True)):
        if isinstance(path, str) and Path(path).is_file():
            key = f"{RAW_PREFIX}{pull_id}/{isic_id}{Path(path).suffix.lower()}"
            store.put(key, Path(path).read_bytes())
            keys.append(key)
        else:
            keys.append(None)
        if on_image:
            on_image(i + 1, total)
    table = table.drop(columns=["path"]).assign(key=keys, pull_id=pull_id)
    store.put(f"{RAW_PREFIX}{pull_id}/metadata.csv", manifest.read_bytes())
    record = _write_table_and_record(
        store,
        pull_id,
        table,
        {
            "kind": "import",
            "source_folder": str(folder.resolve()),
            "counts": {"listed": total, "uploaded": sum(k is not None for k in keys)},
        },
    )
    return record, True

"""Publish a curated version: per-image cues -> manifest (reviews applied) -> immutable version."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any

import pandas as pd

import curation
import models
from workers.isolated_decode import DecoderCrashed, DecoderHung, decode_in_child
from workers.pulls import list_pulls, read_pull_images
from workers.store import ObjectMissing, Store, UnknownId

__all__ = [
    "complete_pull_ids",
    "image_features",
    "load_decisions",
    "publish_version",
    "read_version_summary",
    "list_versions",
]

LATEST_KEY = "curated/LATEST"

log = logging.getLogger(__name__)


def _clean(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _unreadable(reason: str) -> dict[str, Any]:
    """The features of an image that could not be read: rejected, with ``reason``."""
    return {"readable": False, "unreadable_reason": reason, "phone_score": 0.0,
            "phone_verdict": "rejected", "phone_reasons": reason, "phash": None}  # fmt: skip


def image_features(
    store: Store,
    row: dict[str, Any],
    *,
    thresholds: curation.PhoneThresholds | None,
    max_pixels: int,
    isolate: bool = False,
    child_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Phone-likeness, perceptual hash and readability of one stored image.

    With ``isolate`` the image is decoded in a child process
    (:func:`~workers.isolated_decode.decode_in_child`, killed after ``child_timeout_s``): a file
    that crashes or hangs the decoder is then an unreadable image, not a dead worker.
    """
    thresholds = thresholds or curation.PhoneThresholds()
    key = _clean(row.get("key"))
    if key is None:
        return _unreadable("missing: the image was not downloaded")
    decode = partial(decode_in_child, timeout_s=child_timeout_s) if isolate else models.decode_image
    try:
        # Straight to the filter's working scale: the JPEG decoder's own 1/2-1/8 scaling does
        # most of the shrink (the draft the filter applies to a lazily opened JPEG). Decoding
        # to 256 px first cost ~25% of the filter's throughput.
        decoded = decode(store.get(key), max_pixels=max_pixels, target=thresholds.working_size)
    except (models.ImageError, ObjectMissing) as err:
        return _unreadable(f"unreadable: {err}")
    except DecoderCrashed as err:
        log.error("%s: %s", key, err)
        return _unreadable(f"unreadable: {err}")
    except MemoryError:
        raise
    except Exception as err:  # one file's decoder bug must not fail the version (as scoring)
        log.exception("%s: unexpected decoder error", key)
        return _unreadable(f"unreadable: decoder failed: {type(err).__name__}: {err}")
    metadata = {k: _clean(row.get(k)) for k in ("image_type", "dermoscopic_type")}
    verdict = curation.phone_likeness(decoded.image, metadata, thresholds=thresholds)
    return {
        "readable": True,
        "unreadable_reason": None,
        "phone_score": float(verdict.score),
        "phone_verdict": verdict.verdict,
        "phone_reasons": "; ".join(verdict.reasons),
        "phash": curation.perceptual_hash(decoded.image),
        "width": decoded.original_size[0],
        "height": decoded.original_size[1],
    }


def load_decisions(store: Store) -> list[curation.Decision]:
    return [
        curation.Decision.from_json(store.get(o.key).decode())
        for o in store.list("reviews/")
        if o.key.endswith(".json")
    ]


def complete_pull_ids(store: Store, wanted: list[str] | None = None) -> list[str]:
    """The complete pulls' ids, oldest first; ``UnknownId`` if ``wanted`` names any other."""
    pulls = [p["pull_id"] for p in list_pulls(store)]
    unknown = set(wanted or ()) - set(pulls)
    if unknown:
        raise UnknownId(
            f"unknown or incomplete pulls: {sorted(unknown)}; see `birthmark curate pulls`"
        )
    return pulls


def gather_images(store: Store, pull_ids: list[str] | None) -> pd.DataFrame:
    pulls = complete_pull_ids(store, pull_ids)
    chosen = pulls if not pull_ids else [p for p in pulls if p in pull_ids]
    if not chosen:
        raise ValueError(
            "no complete pulls in the store; run `birthmark curate pull` or `curate import`"
        )
    frames = [read_pull_images(store, p) for p in chosen]  # oldest pull first
    df = pd.concat(frames, ignore_index=True)
    # The same ISIC image in two pulls is one image: its newest row wins (a re-import with
    # licences, metadata corrected upstream), and where that pull has no stored copy (its
    # download failed) the newest copy an earlier pull stored is used. Keeping the first row
    # ignored every later fix, and an image whose first download failed stayed missing.
    stored = df.dropna(subset=["key"]).groupby("isic_id", sort=False)["key"].last()
    newest = df.drop_duplicates(subset="isic_id", keep="last")
    newest = newest.assign(key=newest["key"].fillna(newest["isic_id"].map(stored)))
    return newest.sort_index().reset_index(drop=True)


def publish_version(
    store: Store,
    *,
    pull_ids: list[str] | None = None,
    thresholds: curation.PhoneThresholds | None = None,
    allowed_licences: tuple[str, ...] = ("CC-0", "CC-BY"),
    max_distance: int = 6,
    max_pixels: int = 120_000_000,
    threads: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
    isolate_decoding: bool = False,
    hang_s: float | None = None,
) -> dict[str, Any]:
    """Build the manifest and publish it as ``curated/<version>/`` (no-op if it exists).

    ``isolate_decoding`` decodes each image in a child process (see :func:`image_features`).
    ``hang_s`` bounds the wait for each image: past it, in process, :class:`DecoderHung` is
    raised and the stuck thread left behind; in a child, the child is killed after as long and
    the image is unreadable.
    """
    images = gather_images(store, pull_ids)
    rows = images.to_dict("records")
    features: list[dict[str, Any]] = []
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="curate")
    wait_s = None if isolate_decoding else hang_s  # a child's own timeout bounds the wait there
    try:
        futures = [
            pool.submit(
                image_features,
                store,
                r,
                thresholds=thresholds,
                max_pixels=max_pixels,
                isolate=isolate_decoding,
                child_timeout_s=hang_s,
            )
            for r in rows
        ]
        for i, fut in enumerate(futures):
            try:
                features.append(fut.result(timeout=wait_s))
            except FutureTimeout:
                raise DecoderHung(
                    f"{rows[i].get('key')}: not fetched and decoded in {wait_s:g} s"
                ) from None
            if on_progress and (i % 25 == 0 or i + 1 == len(futures)):
                on_progress(i + 1, len(futures))
    finally:
        # Never wait here: a hung decoder's thread cannot be stopped, and the rest are cancelled.
        pool.shutdown(wait=False, cancel_futures=True)
    feats = pd.DataFrame(features)
    # Cues measured now win over any stale copy the pull's table carries (e.g. readable); an
    # image unreadable now keeps the import check's reason where it gave one (which also names
    # a file that was never stored), else the decoder's.
    if "unreadable_reason" in images:
        earlier = images["unreadable_reason"].map(lambda v: _clean(v) or None)
        keep = ~feats["readable"].astype(bool) & earlier.notna()
        feats["unreadable_reason"] = feats["unreadable_reason"].where(~keep, earlier)
    table = pd.concat(
        [images.drop(columns=[c for c in feats.columns if c in images]), feats], axis=1
    )
    decisions = load_decisions(store)
    manifest = curation.build_manifest(
        table, reviews=decisions, allowed_licences=allowed_licences, max_distance=max_distance
    )
    version = curation.manifest_version(manifest)
    parent = store.read_pointer(LATEST_KEY)
    summary = {
        "version": version,
        "parent": parent,
        "created_at": time.time(),
        "pulls": sorted(images["pull_id"].dropna().unique().tolist()),
        "filters": {
            "allowed_licences": list(allowed_licences),
            "duplicate_max_distance": max_distance,
            "phone_thresholds": None if thresholds is None else _thresholds_json(thresholds),
            "reviews_applied": len(decisions),
        },
        **curation.summarize_manifest(manifest),
    }
    base = f"curated/{version}/"
    created = not store.exists(base + "manifest.parquet")
    if created:
        store.put(base + "manifest.parquet", curation.manifest_to_parquet(manifest))
        store.put(base + "summary.json", json.dumps(summary, indent=2, default=str).encode())
    else:
        summary = read_version_summary(store, version)
    if parent != version:
        store.write_pointer(LATEST_KEY, version)  # the pointer goes last
    return {**summary, "created": created}


def _thresholds_json(thresholds: curation.PhoneThresholds) -> dict[str, Any]:
    """The thresholds as plain JSON: the weight tables are read-only mappings, which json
    cannot encode (a job result) and ``default=str`` would store as a Python repr."""
    values = {f.name: getattr(thresholds, f.name) for f in dataclasses.fields(thresholds)}
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}


def read_version_summary(store: Store, version: str) -> dict[str, Any]:
    try:
        return json.loads(store.get(f"curated/{version}/summary.json"))
    except ObjectMissing:
        raise UnknownId(
            f"unknown curated version {version!r}; see `birthmark curate versions`"
        ) from None


def list_versions(store: Store) -> list[dict[str, Any]]:
    out = [
        json.loads(store.get(o.key))
        for o in store.list("curated/")
        if o.key.endswith("/summary.json")
    ]
    return sorted(out, key=lambda s: s["created_at"])

"""birthmark curation: ISIC pulls, metadata, dedupe, licences, splits, manifests and reviews.

Plain library: never imports workers, celery, redis or boto3.
"""

from __future__ import annotations

from curation._columns import CANONICAL_COLUMNS
from curation.contact_sheet import render_contact_sheet
from curation.dedupe import find_duplicates, perceptual_hash
from curation.isic import IsicCliError, IsicDownload, download_images, isic_cli_version
from curation.labelled import (
    fill_licences,
    parse_licence_rules,
    plan_import,
    read_labelled_manifest,
)
from curation.licences import flag_licences
from curation.manifest import (
    MANIFEST_COLUMNS,
    build_manifest,
    diff_manifests,
    manifest_from_parquet,
    manifest_to_parquet,
    manifest_version,
    summarize_manifest,
)
from curation.metadata import read_isic_metadata
from curation.phone import PhoneLikeness, PhoneThresholds, phone_likeness
from curation.reviews import Decision, ReviewSession, apply_reviews, review_queue
from curation.splits import assign_splits
from curation.terminal import render_halfblocks

__all__ = [
    "CANONICAL_COLUMNS",
    "MANIFEST_COLUMNS",
    "Decision",
    "ReviewSession",
    "apply_reviews",
    "build_manifest",
    "diff_manifests",
    "manifest_from_parquet",
    "manifest_to_parquet",
    "manifest_version",
    "review_queue",
    "summarize_manifest",
    "IsicCliError",
    "IsicDownload",
    "assign_splits",
    "download_images",
    "fill_licences",
    "find_duplicates",
    "flag_licences",
    "isic_cli_version",
    "parse_licence_rules",
    "perceptual_hash",
    "plan_import",
    "read_isic_metadata",
    "read_labelled_manifest",
    "render_contact_sheet",
    "render_halfblocks",
    "PhoneLikeness",
    "PhoneThresholds",
    "phone_likeness",
]

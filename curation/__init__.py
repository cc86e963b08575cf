"""birthmark curation: ISIC pulls, metadata, dedupe, licences, splits, manifests and reviews.

Plain library: never imports workers, celery, redis or boto3.
"""

from __future__ import annotations

from curation._columns import CANONICAL_COLUMNS
from curation.isic import IsicCliError, IsicDownload, download_images, isic_cli_version
from curation.metadata import read_isic_metadata

# Phone-likeness lives in curation/phone/ (other branch); the lead adds at merge:
# from curation.phone import PhoneLikeness, PhoneThresholds, phone_likeness

__all__ = [
    "CANONICAL_COLUMNS",
    "IsicCliError",
    "IsicDownload",
    "download_images",
    "isic_cli_version",
    "read_isic_metadata",
]

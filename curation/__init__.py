"""birthmark curation: ISIC pulls, metadata, dedupe, licences, splits, manifests and reviews.

Plain library: never imports workers, celery, redis or boto3.
"""

from __future__ import annotations

import lazy_loader

# Submodules load on first use (SPEC 1 lazy loading, as in ``models``): a CLI command that only
# reads reviews need not import scikit-learn and scipy (~1.5 s) for the phone-likeness fit.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_columns": ["CANONICAL_COLUMNS"],
        "contact_sheet": ["render_contact_sheet"],
        "dedupe": ["find_duplicates", "perceptual_hash"],
        "isic": ["IsicCliError", "IsicDownload", "download_images", "isic_cli_version"],
        "labelled": [
            "fill_licences",
            "parse_licence_rules",
            "plan_import",
            "read_labelled_manifest",
        ],
        "licences": ["flag_licences"],
        "manifest": [
            "MANIFEST_COLUMNS",
            "build_manifest",
            "diff_manifests",
            "manifest_from_parquet",
            "manifest_to_parquet",
            "manifest_version",
            "summarize_manifest",
        ],
        "metadata": ["read_isic_metadata"],
        "phone": ["PhoneLikeness", "PhoneThresholds", "phone_likeness"],
        "reviews": ["Decision", "ReviewSession", "apply_reviews", "review_queue"],
        "splits": ["assign_splits"],
        "terminal": ["render_halfblocks"],
    },
)

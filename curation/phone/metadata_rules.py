"""Metadata cue: what the archive says about how the image was made.

ISIC's ``image_type`` is the strongest evidence there is when present: ``dermoscopic`` (and any
``dermoscopic_type``) means a dermoscope; ``clinical: close-up`` / ``clinical: overview`` are
photos a phone could have taken; ``TBP tile: ...`` are crops from 3D total-body photography
rigs, not phone photos. Missing metadata is normal (uploads, other sources) and is neutral.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ._cue import Cue, sigmoid
from .thresholds import PhoneThresholds

__all__ = ["metadata_cue"]


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def metadata_cue(metadata: Mapping | None, *, thresholds: PhoneThresholds) -> Cue | None:
    """The metadata's log-odds evidence, or None when it says nothing about the capture."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
    image_type = _text(metadata.get("image_type"))
    dermoscopic_type = _text(metadata.get("dermoscopic_type"))
    kind = image_type.lower()
    if kind == "dermoscopic":
        logit = thresholds.metadata_dermoscopic_logit
        reason = "image_type is 'dermoscopic' in metadata"
        if dermoscopic_type:
            reason += f" ({dermoscopic_type})"
    elif dermoscopic_type and not kind.startswith("clinical"):
        logit = thresholds.metadata_dermoscopic_logit
        reason = f"dermoscopic_type is '{dermoscopic_type}' in metadata"
    elif kind.startswith("tbp tile"):
        logit = thresholds.metadata_tbp_logit
        reason = f"image_type is '{image_type}': a total-body-photography tile, not a phone photo"
    elif kind == "clinical: close-up":
        logit = thresholds.metadata_close_up_logit
        reason = "image_type is 'clinical: close-up' in metadata (a phone could take it)"
    elif kind == "clinical: overview":
        logit = thresholds.metadata_overview_logit
        reason = "image_type is 'clinical: overview' in metadata (a phone could take it)"
    elif kind:
        logit = 0.0
        reason = f"image_type '{image_type}' is not one we know; ignored"
    else:
        return None
    features = {"metadata_logit": logit}
    return Cue("metadata", sigmoid(logit), logit, reason, features)

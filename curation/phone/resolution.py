"""Resolution cue (deliberately weak): does the original pixel size look like a phone camera?

Phone cameras write 12 MP and more at 4:3 (or 16:9); dermoscopic archive images are often
resized to 1024x768 or 600x450, or come from DSLR-mounted dermoscopes at 3:2 (6000x4000).
Sizes are easy to change by any resize or crop, so the evidence is small, and images below
``resolution_min_long_side`` (thumbnails, the normalised development set) carry none at all.
"""

from __future__ import annotations

from ._cue import Cue, sigmoid
from .thresholds import PhoneThresholds

__all__ = ["resolution_cue"]


def _is_aspect(w: int, h: int, ratio: float, tolerance: float = 0.02) -> bool:
    long, short = max(w, h), min(w, h)
    return abs(long / short - ratio) <= tolerance * ratio


def resolution_cue(size: tuple[int, int], *, thresholds: PhoneThresholds) -> Cue:
    w, h = size
    megapixels = w * h / 1e6
    features = {"megapixels": megapixels, "aspect": max(w, h) / max(1, min(w, h))}
    dims = f"{w}x{h} px"
    if max(w, h) < thresholds.resolution_min_long_side:
        return Cue("resolution", 0.5, 0.0, f"{dims}: too small to say anything", features)
    phone_aspect = _is_aspect(w, h, 4 / 3) or _is_aspect(w, h, 16 / 9)
    if megapixels >= thresholds.resolution_phone_megapixels and phone_aspect:
        logit = thresholds.resolution_phone_logit
        reason = f"{dims} ({megapixels:.0f} MP) matches a phone camera (weak evidence)"
    elif megapixels >= thresholds.resolution_phone_megapixels and _is_aspect(w, h, 3 / 2):
        logit = thresholds.resolution_archive_logit
        reason = f"{dims} at 3:2 matches a DSLR-mounted dermoscope (weak evidence)"
    elif max(w, h) <= 1100 and _is_aspect(w, h, 4 / 3):
        logit = thresholds.resolution_archive_logit
        reason = f"{dims} matches a resized dermoscopic archive image (weak evidence)"
    else:
        logit = 0.0
        reason = f"{dims}: no typical camera size"
    return Cue("resolution", sigmoid(logit), logit, reason, features)

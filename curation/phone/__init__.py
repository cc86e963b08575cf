"""Could a phone have taken this? Physics-grounded cues that separate phone photos from
dermoscopic images, combined into one score, a verdict and human-readable reasons.

Every cue module returns a ``Cue`` whose score is oriented *phone-like* (1 = phone, 0 =
dermoscope, 0.5 = no evidence) plus a reason; ``score.phone_likeness`` adds their log-odds.
"""

from __future__ import annotations

from ._cue import Cue
from .fit import fit_thresholds
from .score import PIXEL_CUES, PhoneLikeness, measure_phone_cues, phone_likeness, pixel_logit
from .thresholds import FITTED_FEATURES, PhoneThresholds

__all__ = [
    "FITTED_FEATURES",
    "PIXEL_CUES",
    "Cue",
    "PhoneLikeness",
    "PhoneThresholds",
    "fit_thresholds",
    "measure_phone_cues",
    "phone_likeness",
    "pixel_logit",
]

"""Patient metadata (age, sex, anatomical site) as a fixed-width vector with explicit missing flags.

Layout of one row (``METADATA_DIM`` = 14 floats)::

    [age / 100, age_missing, male, female, sex_missing, <8 ISIC sites>, site_missing]

Metadata is optional at scoring time, so every field has a "missing" slot and bad values (age "abc",
sex "x", an unknown site) are encoded as missing rather than raising. ``metadata_problems`` explains
what was dropped, for people reading a scoring report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "AGE_RANGE",
    "METADATA_DIM",
    "SEXES",
    "SITES",
    "SITE_ALIASES",
    "encode_metadata",
    "metadata_problems",
    "missing_metadata",
    "normalize_sex",
    "normalize_site",
    "parse_age",
]

# The ISIC Archive's anatom_site_general vocabulary.
SITES: tuple[str, ...] = (
    "head/neck",
    "upper extremity",
    "lower extremity",
    "anterior torso",
    "posterior torso",
    "palms/soles",
    "lateral torso",
    "oral/genital",
)
SEXES: tuple[str, ...] = ("male", "female")
AGE_RANGE: tuple[float, float] = (0.0, 120.0)
AGE_SCALE = 100.0

# Free-text sites from other datasets (PAD-UFES-20, HAM10000, MILK10k, ...), after lower-casing and
# turning "_" / "-" into spaces. A tuple with several sites spreads the weight evenly: "trunk" does
# not say front or back, and pretending it does would teach the model a false correlation.
_TORSO = ("anterior torso", "posterior torso", "lateral torso")
SITE_ALIASES: dict[str, tuple[str, ...]] = {
    **{site: (site,) for site in SITES},
    "head neck": ("head/neck",),
    "head neck face": ("head/neck",),
    "head": ("head/neck",),
    "neck": ("head/neck",),
    "face": ("head/neck",),
    "scalp": ("head/neck",),
    "ear": ("head/neck",),
    "nose": ("head/neck",),
    "lip": ("head/neck",),
    "cheek": ("head/neck",),
    "forehead": ("head/neck",),
    "upper limb": ("upper extremity",),
    "arm": ("upper extremity",),
    "forearm": ("upper extremity",),
    "hand": ("upper extremity",),
    "shoulder": ("upper extremity",),
    "lower limb": ("lower extremity",),
    "leg": ("lower extremity",),
    "thigh": ("lower extremity",),
    "shin": ("lower extremity",),
    "foot": ("lower extremity",),
    "lower limb hip": ("lower extremity",),
    "chest": ("anterior torso",),
    "abdomen": ("anterior torso",),
    "anterior trunk": ("anterior torso",),
    "back": ("posterior torso",),
    "posterior trunk": ("posterior torso",),
    "lateral trunk": ("lateral torso",),
    "trunk": _TORSO,
    "torso": _TORSO,
    "acral": ("palms/soles",),
    "palm": ("palms/soles",),
    "palms": ("palms/soles",),
    "sole": ("palms/soles",),
    "soles": ("palms/soles",),
    "palms soles": ("palms/soles",),
    "genital": ("oral/genital",),
    "genitals": ("oral/genital",),
    "oral": ("oral/genital",),
    "mouth": ("oral/genital",),
    "oral genital": ("oral/genital",),
    "mucosa": ("oral/genital",),
}
# Values that plainly mean "not recorded": missing, but not worth a problem message.
_MISSING_WORDS = frozenset({"", "unknown", "nan", "none", "null", "na", "n/a", "missing", "?"})

_AGE = 0
_SEX = 2
_SITE = _SEX + len(SEXES) + 1
METADATA_DIM = _SITE + len(SITES) + 1


def _clean(value: object) -> str | None:
    """Lower-cased, whitespace-normalised text, or None for absent/NaN values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = re.sub(r"[\s_\-]+", " ", str(value).strip().lower()).strip()
    return None if text in _MISSING_WORDS else text


def parse_age(value: object) -> float | None:
    """Age in years, or None when absent or not a plausible age (0..120)."""
    if isinstance(value, bool) or _clean(value) is None:
        return None
    try:
        age = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    lo, hi = AGE_RANGE
    return age if lo <= age <= hi else None


def normalize_sex(value: object) -> str | None:
    """``"male"``, ``"female"`` or None (absent or unrecognised)."""
    text = _clean(value)
    return {"m": "male", "f": "female"}.get(text, text) if text in (*SEXES, "m", "f") else None


def normalize_site(value: object) -> tuple[str, ...]:
    """ISIC site(s) a free-text site maps to; empty when absent or unrecognised."""
    text = _clean(value)
    if text is None:
        return ()
    return SITE_ALIASES.get(text, SITE_ALIASES.get(text.replace("/", " "), ()))


def _first(record: Mapping, *keys: str) -> object:
    for key in keys:
        if key in record and _clean(record[key]) is not None:
            return record[key]
    return None


def _encode_one(record: Mapping, out: np.ndarray) -> None:
    age = parse_age(_first(record, "age_approx", "age"))
    if age is None:
        out[_AGE + 1] = 1.0
    else:
        out[_AGE] = age / AGE_SCALE
    sex = normalize_sex(_first(record, "sex"))
    out[_SEX + (SEXES.index(sex) if sex else len(SEXES))] = 1.0
    sites = normalize_site(_first(record, "anatom_site_general", "site"))
    if sites:
        for site in sites:
            out[_SITE + SITES.index(site)] = 1.0 / len(sites)
    else:
        out[_SITE + len(SITES)] = 1.0


def encode_metadata(records: Sequence[Mapping]) -> np.ndarray:
    """Encode metadata records as float32 ``[N, METADATA_DIM]``; never raises on bad values.

    Reads ``age_approx`` (or ``age``), ``sex`` and ``anatom_site_general`` (or ``site``); a record
    may be empty or None, which encodes as all-missing.
    """
    out = np.zeros((len(records), METADATA_DIM), dtype=np.float32)
    for row, record in zip(out, records, strict=True):
        _encode_one(record or {}, row)
    return out


def missing_metadata(n: int = 1) -> np.ndarray:
    """All-missing metadata rows, used when a caller has no metadata at all."""
    return encode_metadata([{}] * n)


def metadata_problems(record: Mapping | None) -> list[str]:
    """Human messages for values that were present but unusable (and so encoded as missing)."""
    record = record or {}
    problems = []
    age = _first(record, "age_approx", "age")
    if age is not None and parse_age(age) is None:
        lo, hi = AGE_RANGE
        problems.append(
            f"age {age!r} is not a number of years in {lo:g}..{hi:g}; treated as missing"
        )
    sex = _first(record, "sex")
    if sex is not None and normalize_sex(sex) is None:
        problems.append(f"sex {sex!r} is not 'male' or 'female'; treated as missing")
    site = _first(record, "anatom_site_general", "site")
    if site is not None and not normalize_site(site):
        problems.append(f"anatomical site {site!r} is not a known site; treated as missing")
    return problems

"""Every threshold and weight of the phone-likeness scorer, as configuration.

The pixel weights (``bias``, ``coefficients``, ``centres``, ``scales``) are a logistic
regression over the features in ``FITTED_FEATURES``: each feature is standardised with its
centre/scale and weighted; the sum plus ``bias`` is the log-odds that a phone took the photo.
They were fitted with ``curation.phone.fit.fit_thresholds`` (class-balanced, L2, C=1) on all
2,752 labelled images of ../shared/data (PAD-UFES-20 phone vs HAM10000 dermoscopic); refit and
print them with ``python -m benchmarks.phone_filter --print-weights``. The other numbers
(metadata, resolution, aperture) are set by hand from how the images are made, because the
development data cannot inform them (no metadata, normalised sizes, centre-cropped corners).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["FITTED_FEATURES", "PhoneThresholds"]

FITTED_FEATURES = (
    "skin_tint",
    "skin_temperature",
    "skin_saturation",
    "pigment_saturation",
    "fine_texture",
    "fine_to_mid_texture",
    "sharpness",
    "light_gradient",
    "light_falloff",
    "corner_darkness",
    "aperture",
    "skin_brightness",
    "highlights",
    "lesion_fraction",
    "edge_pigment",
)

# Fitted values: see the module docstring.
_BIAS = -4.010174
_COEFFICIENTS = {
    "skin_tint": 4.232699,
    "skin_temperature": 1.87473,
    "skin_saturation": -0.078459,
    "pigment_saturation": -0.860516,
    "fine_texture": -0.064284,
    "fine_to_mid_texture": 0.932397,
    "sharpness": 0.947162,
    "light_gradient": 0.814941,
    "light_falloff": -0.691737,
    "corner_darkness": -0.658474,
    "aperture": -1.00171,
    "skin_brightness": -1.082216,
    "highlights": 0.051111,
    "lesion_fraction": -0.163434,
    "edge_pigment": 0.64868,
}
_CENTRES = {
    "skin_tint": -0.135137,
    "skin_temperature": 0.217435,
    "skin_saturation": 0.233576,
    "pigment_saturation": 0.461355,
    "fine_texture": -4.931914,
    "fine_to_mid_texture": 0.760365,
    "sharpness": -3.589326,
    "light_gradient": -3.368426,
    "light_falloff": 0.124524,
    "corner_darkness": 0.039547,
    "aperture": 0.019925,
    "skin_brightness": 0.669524,
    "highlights": 0.003145,
    "lesion_fraction": 0.162996,
    "edge_pigment": 0.061448,
}
_SCALES = {
    "skin_tint": 0.081034,
    "skin_temperature": 0.175751,
    "skin_saturation": 0.110381,
    "pigment_saturation": 0.153129,
    "fine_texture": 0.480247,
    "fine_to_mid_texture": 0.115168,
    "sharpness": 0.509581,
    "light_gradient": 0.894769,
    "light_falloff": 0.139223,
    "corner_darkness": 0.113816,
    "aperture": 0.081149,
    "skin_brightness": 0.087763,
    "highlights": 0.033566,
    "lesion_fraction": 0.094331,
    "edge_pigment": 0.099857,
}

_MAPPINGS = ("coefficients", "centres", "scales")


def _frozen(values: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType({str(k): float(v) for k, v in values.items()})


@dataclass(frozen=True)
class PhoneThresholds:
    """Configuration of ``phone_likeness``; construct with keywords or ``from_mapping``."""

    accept: float = 0.7  # score >= accept => "accepted" (phone-like)
    reject: float = 0.3  # score <= reject => "rejected" (dermoscope-like)
    working_size: int = 192  # long side in px that every image is resampled to
    max_reasons: int = 3
    bias: float = _BIAS
    coefficients: Mapping[str, float] = field(default_factory=lambda: dict(_COEFFICIENTS))
    centres: Mapping[str, float] = field(default_factory=lambda: dict(_CENTRES))
    scales: Mapping[str, float] = field(default_factory=lambda: dict(_SCALES))
    # The linear model is overconfident far from its data; pixel evidence is clipped to this
    # many log-odds (p ~ 0.0025..0.9975) so that archive metadata can still overrule it.
    pixel_logit_cap: float = 6.0
    # A round dark aperture (all four corners much darker than the centre) is near-conclusive.
    aperture_min: float = 0.5
    aperture_logit: float = -3.0
    # Original-size evidence, weak on purpose (any resize changes it).
    resolution_min_long_side: int = 600
    resolution_phone_megapixels: float = 8.0
    resolution_phone_logit: float = 0.4
    resolution_archive_logit: float = -0.3
    # Archive metadata, log-odds added to the pixel evidence.
    metadata_dermoscopic_logit: float = -9.0
    metadata_close_up_logit: float = 2.5
    metadata_overview_logit: float = 1.5
    metadata_tbp_logit: float = -9.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.reject <= self.accept <= 1.0:
            raise ValueError(
                f"need 0 <= reject <= accept <= 1, got reject={self.reject}, accept={self.accept}"
            )
        if self.working_size < 32:
            raise ValueError(f"working_size must be >= 32 px, got {self.working_size}")
        if self.pixel_logit_cap <= 0:
            raise ValueError(f"pixel_logit_cap must be > 0, got {self.pixel_logit_cap}")
        if self.max_reasons < 1:
            raise ValueError(f"max_reasons must be >= 1, got {self.max_reasons}")
        for name in _MAPPINGS:
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> PhoneThresholds:
        """Build from flat settings, e.g. ``{"accept": "0.8", "coefficients.skin_tint": 2}``.

        Keys are field names (case-insensitive); ``<mapping>.<feature>`` overrides one entry of
        ``coefficients``/``centres``/``scales``. Strings are parsed as numbers.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        base = cls()
        scalars: dict[str, object] = {}
        tables = {name: dict(getattr(base, name)) for name in _MAPPINGS}
        for raw_key, value in values.items():
            key = str(raw_key).strip().lower()
            table, _, feature = key.partition(".")
            if feature and table in tables:
                tables[table][feature] = _number(raw_key, value, float)
            elif key in _MAPPINGS and isinstance(value, Mapping):
                tables[key].update({str(k): _number(raw_key, v, float) for k, v in value.items()})
            elif key in fields and key not in _MAPPINGS:
                kind = int if fields[key].type in ("int", int) else float
                scalars[key] = _number(raw_key, value, kind)
            else:
                raise ValueError(
                    f"unknown phone threshold {raw_key!r}; expected one of {sorted(fields)} "
                    f"or '<coefficients|centres|scales>.<feature>'"
                )
        return cls(**scalars, **tables)


def _number(key: object, value: object, kind: type) -> float | int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"phone threshold {key!r} must be a number, got {value!r}") from None
    if kind is int:
        if number != int(number):
            raise ValueError(f"phone threshold {key!r} must be a whole number, got {value!r}")
        return int(number)
    return number

from __future__ import annotations

import math

import pytest

from curation.phone import PhoneThresholds, phone_likeness
from curation.phone.metadata_rules import metadata_cue


def test_dermoscopic_image_type_forces_rejection(phone_image):
    result = phone_likeness(phone_image, {"image_type": "dermoscopic"})
    assert result.score < phone_likeness(phone_image).score
    assert result.reasons[0] == "image_type is 'dermoscopic' in metadata"


def test_dermoscopic_image_type_rejects_ambiguous_pixels(phone_image):
    # Pixels neutral (bias cancels nothing else): metadata alone decides.
    neutral = PhoneThresholds(bias=0.0, coefficients={}, aperture_logit=0.0)
    assert phone_likeness(phone_image, thresholds=neutral).verdict == "needs_review"
    verdict = phone_likeness(phone_image, {"image_type": "dermoscopic"}, thresholds=neutral)
    assert verdict.verdict == "rejected"


def test_dermoscopic_type_alone_counts_as_dermoscopic(dermoscopic_image):
    cue = metadata_cue({"dermoscopic_type": "contact polarized"}, thresholds=PhoneThresholds())
    assert cue is not None and cue.logit < -3
    assert "contact polarized" in cue.reason


@pytest.mark.parametrize("image_type", ["clinical: close-up", "Clinical: Overview"])
def test_clinical_pushes_towards_accepted(dermoscopic_image, image_type):
    plain = phone_likeness(dermoscopic_image)
    meta = phone_likeness(dermoscopic_image, {"image_type": image_type})
    assert meta.logit > plain.logit
    neutral = PhoneThresholds(bias=0.0, coefficients={}, aperture_logit=0.0)
    assert (
        phone_likeness(dermoscopic_image, {"image_type": image_type}, thresholds=neutral).score
        > 0.8
    )


@pytest.mark.parametrize("image_type", ["TBP tile: close-up", "TBP tile: overview"])
def test_tbp_tile_is_rejected(phone_image, image_type):
    result = phone_likeness(phone_image, {"image_type": image_type})
    assert result.verdict == "rejected"
    assert "total-body" in result.reasons[0]


@pytest.mark.parametrize(
    "metadata", [None, {}, {"image_type": None}, {"image_type": math.nan}, {"image_type": ""}]
)
def test_missing_metadata_is_neutral(phone_image, metadata):
    assert phone_likeness(phone_image, metadata).logit == phone_likeness(phone_image).logit


def test_unknown_image_type_is_ignored_but_explained():
    cue = metadata_cue({"image_type": "histology"}, thresholds=PhoneThresholds())
    assert cue is not None and cue.logit == 0.0 and "histology" in cue.reason


def test_metadata_must_be_mapping(phone_image):
    with pytest.raises(TypeError, match="mapping"):
        phone_likeness(phone_image, ["dermoscopic"])  # type: ignore[arg-type]


def test_metadata_weights_are_configurable(phone_image):
    soft = PhoneThresholds(metadata_dermoscopic_logit=-0.5)
    strong = phone_likeness(phone_image, {"image_type": "dermoscopic"})
    weak = phone_likeness(phone_image, {"image_type": "dermoscopic"}, thresholds=soft)
    assert weak.score > strong.score

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from conftest import make_dermoscopic, make_phone
from PIL import Image

from curation.phone import PhoneLikeness, PhoneThresholds, phone_likeness, pixel_logit
from curation.phone.score import measure_phone_cues


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_dermoscopic_is_rejected(seed):
    result = phone_likeness(make_dermoscopic(seed))
    assert result.verdict == "rejected"
    assert result.score < 0.1
    assert any("vignette" in r for r in result.reasons)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_phone_is_accepted(seed):
    result = phone_likeness(make_phone(seed))
    assert result.verdict == "accepted"
    assert result.score > 0.9


def test_result_shape_and_ranges(phone_image, dermoscopic_image):
    for image in (phone_image, dermoscopic_image):
        result = phone_likeness(image)
        assert isinstance(result, PhoneLikeness)
        assert 0.0 <= result.score <= 1.0
        assert result.verdict in {"accepted", "rejected", "needs_review"}
        assert 1 <= len(result.reasons) <= PhoneThresholds().max_reasons
        for reason in result.reasons:
            assert isinstance(reason, str) and len(reason) > 15 and " " in reason
        assert set(result.cues) >= {"colour", "magnification", "illumination", "vignette"}
        assert all(0.0 <= v <= 1.0 for v in result.cues.values())


def test_dermoscopic_cues_point_the_right_way(phone_image, dermoscopic_image):
    phone = phone_likeness(phone_image).cues
    derm = phone_likeness(dermoscopic_image).cues
    for name in ("colour", "magnification", "vignette"):
        assert phone[name] > derm[name], name


def test_thresholds_override_verdict(phone_image):
    score = phone_likeness(phone_image).score
    strict = PhoneThresholds(accept=1.0, reject=0.0)
    assert phone_likeness(phone_image, thresholds=strict).verdict == "needs_review"
    harsh = PhoneThresholds(accept=1.0, reject=min(1.0, score + 1e-9))
    assert phone_likeness(phone_image, thresholds=harsh).verdict == "rejected"


def test_bias_override_moves_score(phone_image):
    base = phone_likeness(phone_image)
    shifted = phone_likeness(phone_image, thresholds=PhoneThresholds(bias=-60.0))
    assert shifted.score < base.score
    assert shifted.verdict == "rejected"


def test_pixel_logit_matches_phone_likeness(phone_image, dermoscopic_image):
    t = PhoneThresholds()
    for image in (phone_image, dermoscopic_image):
        features = measure_phone_cues(image)
        assert pixel_logit(features, thresholds=t) == pytest.approx(phone_likeness(image).logit)


def test_scale_invariance_of_verdict():
    # The same scene at 4x the pixels (a real pull) gets the same verdict.
    small = make_dermoscopic(size=(224, 168))
    big = small.resize((896, 672), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=92)
    lazily = Image.open(io.BytesIO(buffer.getvalue()))
    assert phone_likeness(lazily).verdict == phone_likeness(small).verdict == "rejected"


def test_accepts_other_modes():
    gray = make_phone().convert("L")
    rgba = make_phone().convert("RGBA")
    for image in (gray, rgba):
        assert 0.0 <= phone_likeness(image).score <= 1.0


def test_rejects_bad_input():
    with pytest.raises(TypeError, match="PIL"):
        phone_likeness(np.zeros((10, 10, 3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too small"):
        phone_likeness(Image.new("RGB", (4, 4)))


def test_flat_image_does_not_crash():
    result = phone_likeness(Image.new("RGB", (200, 150), (128, 128, 128)))
    assert 0.0 <= result.score <= 1.0 and np.isfinite(result.logit)


def test_phone_likeness_is_deterministic(phone_image):
    a, b = phone_likeness(phone_image), phone_likeness(phone_image)
    assert dataclasses.asdict(a) == dataclasses.asdict(b)

from __future__ import annotations

import pytest

from curation.phone import FITTED_FEATURES, PhoneThresholds
from curation.phone.resolution import resolution_cue


def test_defaults_hold_fitted_weights_for_every_feature():
    t = PhoneThresholds()
    assert set(t.coefficients) == set(FITTED_FEATURES)
    assert set(t.centres) == set(FITTED_FEATURES) == set(t.scales)
    assert all(s > 0 for s in t.scales.values())


def test_from_mapping_parses_env_style_strings():
    t = PhoneThresholds.from_mapping(
        {"ACCEPT": "0.8", "reject": "0.2", "working_size": "160", "coefficients.skin_tint": "1.5"}
    )
    assert (t.accept, t.reject, t.working_size) == (0.8, 0.2, 160)
    assert t.coefficients["skin_tint"] == 1.5
    assert t.coefficients["aperture"] == PhoneThresholds().coefficients["aperture"]


def test_from_mapping_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError, match="unknown phone threshold 'acept'"):
        PhoneThresholds.from_mapping({"acept": 0.8})
    with pytest.raises(ValueError, match="must be a number"):
        PhoneThresholds.from_mapping({"accept": "high"})
    with pytest.raises(ValueError, match="whole number"):
        PhoneThresholds.from_mapping({"working_size": "160.5"})


def test_inconsistent_thresholds_are_refused():
    with pytest.raises(ValueError, match="reject <= accept"):
        PhoneThresholds(accept=0.3, reject=0.7)


def test_weights_are_read_only():
    with pytest.raises(TypeError):
        PhoneThresholds().coefficients["skin_tint"] = 0.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("size", "sign"),
    [((4032, 3024), 1), ((3024, 4032), 1), ((6000, 4000), -1), ((1024, 768), -1), ((200, 150), 0)],
)
def test_resolution_is_weak_evidence(size, sign):
    cue = resolution_cue(size, thresholds=PhoneThresholds())
    assert abs(cue.logit) <= 0.5
    assert (cue.logit > 0) - (cue.logit < 0) == sign
    assert f"{size[0]}x{size[1]}" in cue.reason

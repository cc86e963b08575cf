"""Settings: a bad value stops startup with the variable named, not a traceback inside a task."""

from __future__ import annotations

import pydantic
import pytest

from workers.settings import Settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BIRTHMARK_CURATION_CRON", "0 3 * *"),  # beat: "not enough values to unpack"
        ("BIRTHMARK_TRAIN_CRON", "0 4 * * 0 *"),
        ("BIRTHMARK_TRAIN_CRON", "0 25 * * 0"),
        ("BIRTHMARK_DEVICE", "gpu"),  # failed every scoring batch and training run
        ("BIRTHMARK_TRAIN_TIME_LIMIT_S", "0"),  # the training lock's TTL: EXPIRE refused
        ("BIRTHMARK_VISIBILITY_TIMEOUT_S", "-1"),
    ],
)
def test_a_bad_value_is_refused_at_startup_with_its_name(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError, match=name.removeprefix("BIRTHMARK_").lower()):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BIRTHMARK_CURATION_CRON", "*/30 2-5 1,15 * mon-fri"),
        ("BIRTHMARK_DEVICE", "cuda:1"),
    ],
)
def test_good_values_pass(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert getattr(Settings(), name.removeprefix("BIRTHMARK_").lower()) == value

from __future__ import annotations

import pytest

from models.diagnosis import DIAGNOSIS_GROUPS, diagnosis_group


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("mel", "melanoma"),  # HAM10000 codes
        ("akiec", "actinic_keratosis"),
        ("bkl", "benign_keratosis"),
        ("NEV", "nevus"),  # PAD-UFES-20 codes
        ("ACK", "actinic_keratosis"),
        ("SEK", "benign_keratosis"),
        ("SCC", "squamous_cell_carcinoma"),
        ("Melanoma in situ", "melanoma"),  # ISIC free text
        ("Nevus, Spitz", "nevus"),
        ("Solar or actinic keratosis", "actinic_keratosis"),
        ("Squamous cell carcinoma, Invasive", "squamous_cell_carcinoma"),
        ("Basal cell carcinoma", "basal_cell_carcinoma"),
        ("Hemangioma", "vascular"),
        ("Solar lentigo", "benign_keratosis"),
        (" dermatofibroma ", "dermatofibroma"),
    ],
)
def test_names_from_each_source_map_to_one_group(name, group):
    assert DIAGNOSIS_GROUPS[diagnosis_group(name)] == group


@pytest.mark.parametrize("name", [None, float("nan"), "", "Indeterminate", "scar"])
def test_unknown_or_missing_names_are_left_out(name):
    assert diagnosis_group(name) == -1

"""Diagnosis groups: one small vocabulary for the names ISIC, HAM10000 and PAD-UFES-20 use.

Training can predict the group as an auxiliary task (``TrainConfig.aux_diagnosis_weight``): eight
kinds of lesion carry more information than benign/malignant, and a trunk that must tell a
seborrheic keratosis from a melanoma learns features that the malignancy head can use. The group
is never a model output; unknown or missing names are simply left out of the auxiliary loss.
"""

from __future__ import annotations

import math

__all__ = ["DIAGNOSIS_GROUPS", "diagnosis_group"]

DIAGNOSIS_GROUPS: tuple[str, ...] = (
    "nevus",
    "melanoma",
    "basal_cell_carcinoma",
    "actinic_keratosis",  # incl. Bowen's disease / intraepithelial carcinoma (HAM10000 "akiec")
    "squamous_cell_carcinoma",
    "benign_keratosis",  # seborrheic keratosis, solar lentigo, lichenoid keratosis
    "dermatofibroma",
    "vascular",
)

_CODES = {
    "nv": 0, "nev": 0,
    "mel": 1,
    "bcc": 2,
    "akiec": 3, "ack": 3, "ak": 3,
    "scc": 4,
    "bkl": 5, "sek": 5,
    "df": 6,
    "vasc": 7,
}  # fmt: skip

# Checked in order against lower-cased free text (ISIC diagnosis levels): first match wins.
_WORDS = (
    ("melanoma", 1),
    ("basal cell", 2),
    ("actinic", 3),
    ("bowen", 3),
    ("squamous cell", 4),
    ("seborrheic", 5),
    ("benign keratosis", 5),
    ("lichenoid", 5),
    ("lentigo", 5),
    ("dermatofibroma", 6),
    ("angio", 7),
    ("hemangioma", 7),
    ("haemangioma", 7),
    ("vascular", 7),
    ("pyogenic granuloma", 7),
    ("nevus", 0),
    ("naevus", 0),
)


def diagnosis_group(name: object) -> int:
    """Index into ``DIAGNOSIS_GROUPS`` for a diagnosis name or code; -1 when unknown or missing."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return -1
    text = str(name).strip().lower()
    if text in _CODES:
        return _CODES[text]
    for word, group in _WORDS:
        if word in text:
            return group
    return -1

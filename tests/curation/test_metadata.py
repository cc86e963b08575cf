from __future__ import annotations

import io
import math

import pytest

from curation import CANONICAL_COLUMNS, read_isic_metadata

# Header as isic-cli writes it: base fields, then the sorted union of metadata keys.
CSV = """\
isic_id,attribution,copyright_license,age_approx,anatom_site_general,dermoscopic_type,\
diagnosis_1,diagnosis_2,diagnosis_3,image_type,lesion_id,melanocytic,patient_id,pixels_x,pixels_y,sex
ISIC_0000001,Inst A,CC-BY,55,posterior torso,contact polarized,Malignant,\
Malignant melanocytic proliferations (Melanoma),Melanoma Invasive,dermoscopic,IL_0000001,True,\
IP_0000001,1024,768,male
ISIC_0000002,Inst B,CC-0,,,,Benign,Benign melanocytic proliferations,,clinical: close-up,,,,640,480,
ISIC_0000003,Anonymous,CC-BY-NC,85,head/neck,,Indeterminate,,,clinical: overview,IL_0000003,,,\
10,10,female
ISIC_0000004,Anonymous,CC-BY-NC,40,,,,,,dermoscopic,,,,10,10,FEMALE
"""


def test_read_isic_metadata_maps_to_canonical_columns():
    df = read_isic_metadata(io.StringIO(CSV))

    assert list(df.columns) == list(CANONICAL_COLUMNS)
    assert list(df["isic_id"]) == [f"ISIC_000000{i}" for i in range(1, 5)]
    first = df.iloc[0]
    assert first["diagnosis"] == "Melanoma Invasive"
    assert first["malignant"] == 1.0
    assert first["age_approx"] == 55.0
    assert first["sex"] == "male"
    assert first["dermoscopic_type"] == "contact polarized"
    assert first["patient_id"] == "IP_0000001"
    second = df.iloc[1]
    assert second["diagnosis"] == "Benign melanocytic proliferations"  # most specific present
    assert second["malignant"] == 0.0
    assert math.isnan(second["age_approx"])
    assert second["sex"] is None and second["lesion_id"] is None
    assert math.isnan(df.iloc[2]["malignant"])  # Indeterminate
    assert df.iloc[2]["diagnosis"] == "Indeterminate"
    assert math.isnan(df.iloc[3]["malignant"]) and df.iloc[3]["diagnosis"] is None
    assert df.iloc[3]["sex"] == "female"
    assert set(df["source"]) == {"isic"}
    assert df["key"].isna().all()


def test_read_isic_metadata_header_only():
    df = read_isic_metadata(io.StringIO("isic_id,attribution,copyright_license\n"))
    assert df.empty and list(df.columns) == list(CANONICAL_COLUMNS)


def test_read_isic_metadata_requires_isic_id():
    with pytest.raises(ValueError, match="'isic_id'"):
        read_isic_metadata(io.StringIO("file,diagnosis\na.jpg,nv\n"))


def test_read_real_milk10k_rows(shared_data):
    df = read_isic_metadata(shared_data / "isic-metadata" / "milk10k_metadata.csv")
    assert len(df) > 10_000
    assert df["isic_id"].is_unique
    assert set(df["image_type"]) == {"clinical: close-up", "dermoscopic"}
    assert set(df["sex"].dropna()) <= {"male", "female"}
    assert df["lesion_id"].str.startswith("IL_").all()
    assert df["malignant"].isna().all()  # MILK10k metadata carries no diagnosis

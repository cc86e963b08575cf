from __future__ import annotations

import pandas as pd
import pytest

from curation import flag_licences


def test_flag_licences():
    df = pd.DataFrame({"copyright_license": ["CC-0", "CC-BY", "CC-BY-NC", None, ""]})
    out = flag_licences(df)
    assert list(out["licence_ok"]) == [True, True, False, False, False]
    assert out["licence_note"].iloc[0] is None
    assert out["licence_note"].iloc[2] == "CC-BY-NC not in allowed licences CC-0, CC-BY"
    assert out["licence_note"].iloc[3].startswith("missing licence")
    assert "licence_ok" not in df.columns  # input untouched


def test_flag_licences_custom_allowed_and_missing_column():
    out = flag_licences(pd.DataFrame({"copyright_license": ["CC-BY-NC"]}), allowed=["CC-BY-NC"])
    assert out["licence_ok"].all()
    assert not flag_licences(pd.DataFrame({"isic_id": ["a"]}))["licence_ok"].any()
    with pytest.raises(TypeError):
        flag_licences(out, allowed="CC-BY")


def test_licence_names_match_whatever_their_case_and_nothing_else():
    df = pd.DataFrame({"copyright_license": ["cc-by", "Cc-0", " CC-BY ", "cc-by-nc", "CC BY"]})
    out = flag_licences(df, allowed=["CC-0", "cc-BY"])
    assert list(out["licence_ok"]) == [True, True, True, False, False]

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from curation import (
    MANIFEST_COLUMNS,
    Decision,
    build_manifest,
    diff_manifests,
    manifest_from_parquet,
    manifest_to_parquet,
    manifest_version,
    summarize_manifest,
)


def _images(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    hashes = [f"{int(v):016x}" for v in rng.integers(0, 2**62, size=n)]
    hashes[-1] = hashes[0]  # an exact duplicate (e.g. the same image in a later pull)
    scores = np.round(rng.uniform(0, 1, size=n), 3)
    return pd.DataFrame(
        {
            "isic_id": [f"ISIC_{i:07d}" for i in range(n)][::-1],  # unsorted input
            "pull_id": ["p1"] * (n - 1) + ["p2"],
            "key": [f"raw/isic/p/ISIC_{i:07d}.jpg" for i in range(n)][::-1],
            "copyright_license": (["CC-BY", "CC-0", "CC-BY-NC"] * n)[:n],
            "malignant": [1.0, 0.0, None] * (n // 3),
            "patient_id": [f"IP_{i // 2}" for i in range(n)],
            "phash": hashes,
            "readable": [True] * (n - 2) + [False, True],
            "phone_score": scores,
            "phone_verdict": [
                "accepted" if s > 0.7 else "rejected" if s < 0.3 else "needs_review" for s in scores
            ],
            "phone_reasons": [["exif: phone camera", "no dermoscope ring"]] + [[]] * (n - 1),
        }
    )


def test_build_manifest_columns_and_rules():
    images = _images()
    needs = images.loc[images["phone_verdict"] == "needs_review", "isic_id"].iloc[0]
    m = build_manifest(images, reviews=[Decision(isic_id=needs, decision="accept", reviewer="r")])

    assert list(m.columns) == list(MANIFEST_COLUMNS)
    assert m["isic_id"].tolist() == sorted(images["isic_id"])
    row = m.set_index("isic_id").loc[needs]
    assert row["verdict"] == "accepted" and row["auto_verdict"] == "needs_review"
    assert row["review_decision"] == "accept"
    assert m["is_duplicate"].sum() == 1
    assert m["phone_reasons"].dropna().tolist() == ["exif: phone camera; no dermoscope ring"]
    expected = m["readable"] & ~m["is_duplicate"] & m["malignant"].notna()
    assert m["included"].tolist() == expected.tolist()
    assert set(m["split"]) <= {"train", "val", "test"}
    assert m.loc[m["copyright_license"] == "CC-BY-NC", "licence_ok"].eq(False).all()
    strict = build_manifest(images, require_licence=True, include_verdicts={"accepted"})
    assert (strict.loc[strict["included"], "licence_ok"]).all()
    assert (strict.loc[strict["included"], "verdict"] == "accepted").all()


def test_build_manifest_needs_isic_id():
    with pytest.raises(ValueError, match="isic_id"):
        build_manifest(pd.DataFrame({"file": ["a.jpg"]}))


def test_manifest_version_is_content_hash_independent_of_row_order():
    m = build_manifest(_images())
    v = manifest_version(m)
    assert len(v) == 12 and int(v, 16) >= 0
    assert manifest_version(m.sample(frac=1.0, random_state=1)) == v
    assert manifest_version(m[list(reversed(m.columns))]) == v
    assert manifest_version(build_manifest(_images())) == v
    changed = m.copy()
    changed.loc[0, "verdict"] = "rejected" if m.loc[0, "verdict"] != "rejected" else "accepted"
    assert manifest_version(changed) != v


def test_parquet_round_trip_keeps_content_and_version():
    m = build_manifest(_images())
    back = manifest_from_parquet(manifest_to_parquet(m))
    assert manifest_version(back) == manifest_version(m)
    assert back["sex"].dtype == object and back["included"].dtype == bool
    assert back["review_decision"].iloc[0] is None
    pd.testing.assert_frame_equal(back, m)


def test_diff_manifests():
    old = build_manifest(_images())
    ids = old["isic_id"].tolist()
    new_images = _images()[lambda d: d["isic_id"] != ids[0]]
    extra = _images(3).assign(isic_id=["ISIC_9000000", "ISIC_9000001", "ISIC_9000002"])
    target = old.loc[old["verdict"] != "accepted", "isic_id"].iloc[-1]
    new = build_manifest(
        pd.concat([new_images, extra], ignore_index=True),
        reviews=[Decision(isic_id=target, decision="accept", reviewer="r")],
    )
    diff = diff_manifests(old, new).set_index("isic_id")
    assert diff.loc[ids[0], "change"] == "removed"
    assert set(diff.index[diff["change"] == "added"]) == set(extra["isic_id"])
    assert diff.loc[target, "change"] == "verdict_changed"
    assert diff.loc[target, "new_verdict"] == "accepted"
    assert len(diff) == 5
    assert diff_manifests(old, old).empty


def test_summarize_manifest_counts():
    m = build_manifest(_images())
    s = summarize_manifest(m)
    assert s["rows"] == 12 and s["version"] == manifest_version(m)
    assert sum(s["by_verdict"].values()) == 12
    assert sum(s["by_split"].values()) == 12
    assert s["duplicates"] == 1 and s["duplicate_groups"] == 1
    assert s["unreadable"] == 1
    assert s["included"] == int(m["included"].sum())
    assert s["by_licence"] == {"CC-0": 4, "CC-BY": 4, "CC-BY-NC": 4}
    assert s["licence_not_ok"] == 4
    backlog = (m["verdict"] == "needs_review") & ~m["is_duplicate"]
    assert s["review_backlog"] == int(backlog.sum())
    assert s["phone_like"] == int((m["verdict"] == "accepted").sum())
    assert all(isinstance(v, int) for v in s["by_verdict"].values())


def test_build_manifest_from_bare_canonical_table():
    m = build_manifest(pd.DataFrame({"isic_id": ["a", "b"], "malignant": [1, math.nan]}))
    assert m["verdict"].tolist() == ["needs_review", "needs_review"]
    assert m["included"].tolist() == [True, False]
    assert not m["is_duplicate"].any()


def test_manifest_from_real_labelled_folder(shared_data):
    from curation import perceptual_hash, plan_import, read_labelled_manifest

    labelled = read_labelled_manifest(shared_data / "manifest.csv")
    subset = pd.concat(
        [
            labelled[labelled["kind"] == "phone"].head(15),
            labelled[labelled["kind"] != "phone"].head(15),
        ]
    )
    plan = plan_import(shared_data, subset)
    plan["phash"] = [perceptual_hash(p) for p in plan["path"]]
    m = build_manifest(plan.assign(pull_id="import-1"))
    assert len(m) == 30 and m["readable"].all()
    assert m["included"].sum() == 30 - m["is_duplicate"].sum()
    assert set(m.loc[m["kind"] == "dermoscopic", "image_type"]) == {"dermoscopic"}
    # patients of PAD-UFES-20 and lesions of HAM10000 stay within one split
    for column in ("patient_id", "lesion_id"):
        assert (m.dropna(subset=[column]).groupby(column)["split"].nunique() <= 1).all()

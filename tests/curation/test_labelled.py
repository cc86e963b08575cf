from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from PIL import Image

from curation import (
    CANONICAL_COLUMNS,
    fill_licences,
    parse_licence_rules,
    plan_import,
    read_labelled_manifest,
)

MANIFEST = """\
file,kind,source,image_id,diagnosis,malignant,age,sex,site,patient_id,lesion_id
phone/a.jpg,phone,PAD-UFES-20,PAT_1_2_3,BCC,1,63,MALE,face,PAT_1,PAT_1_2
dermoscopic/b.jpg,dermoscopic,HAM10000,ISIC_0000001,nv,0,45.0,female,back,,HAM_1
phone/c.jpg,phone,PAD-UFES-20,PAT_2_3_4,NEV,,,unknown,,PAT_2,
"""


def _write_images(folder, names, *, size=(32, 24)):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 150, 120)).save(path, format="JPEG")


def test_read_labelled_manifest_maps_columns(tmp_path):
    (tmp_path / "manifest.csv").write_text(MANIFEST)
    df = read_labelled_manifest(tmp_path / "manifest.csv")

    assert list(df.columns) == [*CANONICAL_COLUMNS, "file", "kind"]
    a, b, c = (df.iloc[i] for i in range(3))
    assert a["isic_id"] == "PAT_1_2_3" and a["file"] == "phone/a.jpg"
    assert a["sex"] == "male" and a["age_approx"] == 63.0 and a["malignant"] == 1.0
    assert a["image_type"] == "clinical: close-up" and a["kind"] == "phone"
    assert a["anatom_site_general"] == "face" and a["source"] == "PAD-UFES-20"
    assert (
        b["image_type"] == "dermoscopic" and b["patient_id"] is None and b["lesion_id"] == "HAM_1"
    )
    assert b["malignant"] == 0.0 and b["diagnosis"] == "nv"
    assert math.isnan(c["malignant"]) and math.isnan(c["age_approx"])
    assert c["sex"] is None and c["anatom_site_general"] is None


def test_read_labelled_manifest_names_missing_columns(tmp_path):
    (tmp_path / "m.csv").write_text("file,diagnosis\na.jpg,nv\n")
    with pytest.raises(ValueError, match="image_id, malignant; found columns: file, diagnosis"):
        read_labelled_manifest(tmp_path / "m.csv")


def test_read_labelled_manifest_without_kind_leaves_image_type_empty(tmp_path):
    (tmp_path / "m.csv").write_text("file,image_id,malignant\na.jpg,A,1\n")
    df = read_labelled_manifest(tmp_path / "m.csv")
    assert df.loc[0, "image_type"] is None and df.loc[0, "kind"] is None


def test_read_labelled_manifest_rejects_duplicate_ids(tmp_path):
    (tmp_path / "m.csv").write_text("file,image_id,malignant\na.jpg,A,1\nb.jpg,A,0\n")
    with pytest.raises(ValueError, match="repeated: \\['A'\\]"):
        read_labelled_manifest(tmp_path / "m.csv")


def test_isic_metadata_csv_is_accepted_as_manifest(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "isic_id,attribution,copyright_license,diagnosis_1,image_type\n"
        "ISIC_0000001,A,CC-BY,Malignant,dermoscopic\n"
        "ISIC_0000002,A,CC-0,Benign,clinical: close-up\n"
    )
    _write_images(tmp_path, ["ISIC_0000001.jpg"])
    Image.new("RGB", (8, 8)).save(tmp_path / "ISIC_0000002.png")

    df = read_labelled_manifest(tmp_path / "metadata.csv")

    assert list(df["file"]) == ["ISIC_0000001.jpg", "ISIC_0000002.png"]
    assert list(df["malignant"]) == [1.0, 0.0]
    assert list(df["copyright_license"]) == ["CC-BY", "CC-0"]


def test_plan_import_marks_missing_corrupt_and_escaping_files(tmp_path):
    _write_images(tmp_path, ["ok.jpg"])
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = tmp_path / "ok.jpg"
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    manifest = pd.DataFrame(
        {
            "isic_id": list("ABCDEF"),
            "file": ["ok.jpg", "bad.jpg", "cut.jpg", "nope.jpg", "../x.jpg", None],
        }
    )

    plan = plan_import(tmp_path, manifest)

    assert list(plan["readable"]) == [True, False, False, False, False, False]
    reasons = list(plan["unreadable_reason"])
    assert reasons[0] is None
    assert reasons[1] == "not an image"
    assert reasons[2].startswith("corrupt image")
    assert reasons[3] == "file not found"
    assert "outside" in reasons[4] and plan["path"].iloc[4] is None
    assert reasons[5] == "no file named in manifest"
    assert plan["path"].iloc[0] == str(good.resolve())


def test_real_shared_manifest(shared_data):
    df = read_labelled_manifest(shared_data / "manifest.csv")
    assert len(df) > 2000 and df["isic_id"].is_unique
    assert set(df["kind"]) == {"phone", "dermoscopic"}
    assert set(df["sex"].dropna()) == {"male", "female"}
    assert df["malignant"].isin([0.0, 1.0]).all()
    plan = plan_import(shared_data, df.head(20))
    assert plan["readable"].all()


def test_licence_rules_fill_only_what_the_manifest_leaves_empty(tmp_path):
    text = MANIFEST.replace("lesion_id\n", "lesion_id,copyright_license\n", 1)
    text = text.replace("PAT_1,PAT_1_2\n", "PAT_1,PAT_1_2,CC-0\n").replace("HAM_1\n", "HAM_1,\n")
    (tmp_path / "manifest.csv").write_text(text.replace("PAT_2,\n", "PAT_2,,\n"))
    df = read_labelled_manifest(tmp_path / "manifest.csv")
    rules = parse_licence_rules(["HAM10000=CC-BY-NC", "CC-BY"])
    assert rules == {"HAM10000": "CC-BY-NC", "*": "CC-BY"}
    filled = fill_licences(df, rules)
    # The stated CC-0 stays; HAM10000 gets its own rule; the other empty row the catch-all.
    assert filled["copyright_license"].tolist() == ["CC-0", "CC-BY-NC", "CC-BY"]
    assert fill_licences(df, {"HAM10000": "CC-BY-NC"})["copyright_license"].tolist() == [
        "CC-0", "CC-BY-NC", None,
    ]  # fmt: skip


@pytest.mark.parametrize("rules", [["=CC-BY"], ["HAM10000="], ["A=CC-BY", "A=CC-0"], [""]])
def test_bad_licence_rules_are_refused(rules):
    with pytest.raises(ValueError, match="licence"):
        parse_licence_rules(rules)


def test_a_damaged_avif_is_an_unreadable_file_not_an_error(tmp_path):
    from curation._images import unreadable_reason

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (100, 50, 20)).save(buf, "AVIF")
    data = buf.getvalue()
    reasons = []
    for start in range(0, len(data), 8):  # the plugin raises RuntimeError for some of these
        damaged = bytearray(data)
        damaged[start : start + 8] = b"\xff" * 8
        path = tmp_path / f"damaged-{start}.avif"
        path.write_bytes(bytes(damaged))
        reasons.append(unreadable_reason(path))
    assert any(r and "RuntimeError" in r for r in reasons)


def test_a_heic_import_is_readable_without_models_loaded(tmp_path):
    """HEIC support came from ``models.imageio`` registering pillow-heif's opener; ``models`` now
    loads lazily, so the import check (``birthmark curate import``) registers it itself."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import io, sys\n"
        "import pillow_heif\n"
        "from PIL import Image\n"
        "buf = io.BytesIO()\n"
        "pillow_heif.from_pillow(Image.new('RGB', (64, 48), (180, 90, 60))).save(buf, quality=90)\n"
        f"path = {str(tmp_path / 'photo.heic')!r}\n"
        "open(path, 'wb').write(buf.getvalue())\n"
        "from curation._images import unreadable_reason\n"
        "from curation.dedupe import perceptual_hash\n"
        "assert 'models.imageio' not in sys.modules\n"
        "assert unreadable_reason(path) is None, unreadable_reason(path)\n"
        "assert len(perceptual_hash(path)) == 16\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]

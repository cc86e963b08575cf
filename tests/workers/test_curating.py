"""Publishing curated versions in-process (no worker): which pull's row an image gets, the
summary's JSON, and the `curate versions` / `curate diff` output."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import curation
from curation.synthetic import write_isic_sample
from workers import curating, pulls


@pytest.fixture
def st(env):
    from workers.runtime import store

    return store()


def _sample(tmp_path, n: int = 6):
    folder = tmp_path / "sample"
    write_isic_sample(folder, n=n, seed=5)
    return folder


def _import(st, folder, **kw):
    return pulls.import_folder(st, folder, **kw)  # an isic-cli folder's metadata.csv is found


def test_a_folder_without_any_manifest_names_both_it_looked_for(st, tmp_path):
    with pytest.raises(ValueError, match="no manifest.csv or metadata.csv"):
        pulls.import_folder(st, tmp_path)


def test_an_image_id_that_cannot_name_a_file_refuses_the_import_before_any_upload(st, tmp_path):
    folder = _sample(tmp_path)
    text = (folder / "metadata.csv").read_text()
    (folder / "metadata.csv").write_text(text.replace("ISIC_9000003,", "../ISIC_9000003,", 1))
    with pytest.raises(ValueError, match=r"cannot name a stored file.*\.\./ISIC_9000003"):
        _import(st, folder)
    assert list(st.list("raw/")) == []


def test_a_later_pull_supersedes_an_earlier_one(st, tmp_path):
    """Re-importing with licences (as the README tells a user to) changes the next version;
    it used to keep the first import's rows, licences missing, and publish the same version."""
    folder = _sample(tmp_path)
    text = (folder / "metadata.csv").read_text().replace(",CC-0,", ",,")
    (folder / "metadata.csv").write_text(text)
    first, _ = _import(st, folder)
    v1 = curating.publish_version(st, threads=1)
    assert v1["by_licence"] == {"(none)": 6}
    second, created = _import(st, folder, licences={"*": "CC-BY"})
    assert created and second["pull_id"] != first["pull_id"]
    v2 = curating.publish_version(st, threads=1)
    assert v2["version"] != v1["version"] and v2["by_licence"] == {"CC-BY": 6}
    assert v2["pulls"] == [second["pull_id"]]


def test_an_image_missing_from_its_first_pull_is_taken_from_a_later_one(st, tmp_path):
    folder = _sample(tmp_path)
    missing = folder / "ISIC_9000002.jpg"
    kept = tmp_path / "kept.jpg"
    shutil.move(missing, kept)
    _import(st, folder)
    shutil.move(kept, missing)
    later, _ = _import(st, folder)
    images = curating.gather_images(st, None)
    row = images.set_index("isic_id").loc["ISIC_9000002"]
    assert row["key"] == f"raw/isic/{later['pull_id']}/ISIC_9000002.jpg"
    # and a newer pull that lacks an image falls back to the copy an earlier pull stored
    (folder / "ISIC_9000003.jpg").unlink()
    newest, _ = _import(st, folder)
    images = curating.gather_images(st, None).set_index("isic_id")
    assert images.loc["ISIC_9000003", "pull_id"] == newest["pull_id"]
    assert images.loc["ISIC_9000003", "key"] == f"raw/isic/{later['pull_id']}/ISIC_9000003.jpg"


def test_pull_tables_come_back_as_written(st, tmp_path):
    """patient_id 007 stays 007 (not 7.0, which also moved the patient's split key with the
    pulls chosen), lesion_id 0101 stays 0101, and a diagnosis NA is not a missing value."""
    folder = tmp_path / "local"
    folder.mkdir()
    sample = _sample(tmp_path, n=2)
    for i, name in enumerate(sorted(sample.glob("*.jpg"))):
        shutil.copy(name, folder / f"a{i}.jpg")
    (folder / "manifest.csv").write_text(
        "file,image_id,malignant,patient_id,lesion_id,diagnosis\n"
        "a0.jpg,A0,0,007,0101,NA\n"
        "a1.jpg,A1,1,,0102,nevus\n"
    )
    record, _ = _import(st, folder)
    table = pulls.read_pull_images(st, record["pull_id"]).set_index("isic_id")
    assert table.loc["A0", "patient_id"] == "007" and table.loc["A0", "lesion_id"] == "0101"
    assert table.loc["A0", "diagnosis"] == "NA"
    manifest = curation.build_manifest(curating.gather_images(st, None).assign(phash=None))
    assert manifest.set_index("isic_id").loc["A0", "patient_id"] == "007"


def test_configured_thresholds_are_stored_as_json(st, tmp_path):
    """With BIRTHMARK_PHONE_ACCEPT/_REJECT set, every new version's job used to fail (a
    mappingproxy in the result) after publishing, and summary.json held Python reprs."""
    _import(st, _sample(tmp_path))
    thresholds = curation.PhoneThresholds(accept=0.9, reject=0.1)
    summary = curating.publish_version(st, thresholds=thresholds, threads=1)
    json.dumps(summary)  # what the job record does with it
    stored = curating.read_version_summary(st, summary["version"])
    coefficients = stored["filters"]["phone_thresholds"]["coefficients"]
    assert coefficients == dict(thresholds.coefficients)


def test_versions_table_and_diff_of_an_unknown_version(st, tmp_path):
    from workers.cli import app

    _import(st, _sample(tmp_path))
    summary = curating.publish_version(st, threads=1)
    runner = CliRunner()
    res = runner.invoke(app, ["curate", "versions"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if summary["version"] in line)
    assert f"│ {summary['rows']} " in row and "'accepted'" in row
    res = runner.invoke(
        app, ["curate", "diff", summary["version"], "nope00000000"], env={"COLUMNS": "200"}
    )
    # Bad usage naming the version (it used to be "error: 'curated/nope.../manifest...'")
    assert res.exit_code == 2, res.output
    assert "unknown curated version 'nope00000000'" in res.output


def test_a_decoder_bug_on_one_image_makes_it_unreadable_not_a_failed_version(
    st, monkeypatch, caplog
):
    import models
    from tests.workers.helpers import good_jpeg

    st.put("raw/x/ok.jpg", good_jpeg(1))
    st.put("raw/x/odd.jpg", good_jpeg(2))
    decode = models.decode_image

    def buggy(data, **kw):
        if data == good_jpeg(2):
            raise TypeError("unexpected tag type")  # what no decoder documents
        return decode(data, **kw)

    monkeypatch.setattr(models, "decode_image", buggy)
    features = {
        key: curating.image_features(st, {"key": key}, thresholds=None, max_pixels=10**8)
        for key in ("raw/x/ok.jpg", "raw/x/odd.jpg")
    }
    assert features["raw/x/ok.jpg"]["readable"]
    assert not features["raw/x/odd.jpg"]["readable"]
    assert "TypeError" in features["raw/x/odd.jpg"]["phone_reasons"]
    assert "unexpected decoder error" in caplog.text


def test_an_image_only_curation_cannot_decode_says_why(st, tmp_path):
    """`unreadable_reason` came only from the import check: an image that passed it but that
    curation could not decode (its stored copy cut short after the import) was rejected with
    the column empty, so a reviewer could not see why."""
    from workers.training_run import load_manifest

    folder = _sample(tmp_path)
    (folder / "ISIC_9000001.jpg").write_bytes(b"not really a jpeg")  # the import check's find
    record, _ = _import(st, folder)
    key = f"raw/isic/{record['pull_id']}/ISIC_9000002.jpg"
    whole = st.get(key)
    st.put(key, whole[: len(whole) // 2])
    _, manifest = load_manifest(st, curating.publish_version(st, threads=1)["version"])
    rows = manifest.set_index("isic_id")
    cut = rows.loc["ISIC_9000002"]
    assert not cut["readable"] and cut["verdict"] == "rejected"
    assert cut["unreadable_reason"].startswith(
        "unreadable: cannot decode JPEG image: image file is truncated"
    )
    assert rows.loc["ISIC_9000001", "unreadable_reason"] == "not an image"  # kept, not replaced
    assert rows.loc[rows["readable"], "unreadable_reason"].isna().all()

"""Curation end to end: the real isic-cli pulls from a loopback ISIC server through a real worker;
imports; curated versions; review decisions applied in the next version."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from curation.synthetic import jpeg_bytes, make_lesion_image
from tests.isic_server import IsicRecord, IsicTestServer

pytestmark = pytest.mark.integration


def _wait(job_id: str, timeout: float = 180.0) -> dict:
    """Until the job ends, by the same polling `birthmark ... --wait` uses."""
    from workers.cli._common import wait_for_job

    return wait_for_job(job_id, quiet=True, timeout_s=timeout)


def _records(n: int = 8) -> list[IsicRecord]:
    rng = np.random.default_rng(3)
    records = []
    for i in range(n):
        phone = i % 2 == 0
        img = make_lesion_image(
            rng, malignant=i % 3 == 0, style="phone" if phone else "dermoscopic"
        )
        acquisition = {
            "image_type": "clinical: close-up" if phone else "dermoscopic",
            "pixels_x": img.width,
            "pixels_y": img.height,
        }
        if not phone:
            acquisition["dermoscopic_type"] = "contact polarized"
        records.append(
            IsicRecord(
                isic_id=f"ISIC_{7000000 + i:07d}",
                data=jpeg_bytes(img),
                acquisition=acquisition,
                clinical={
                    "age_approx": 40 + i,
                    "sex": "female",
                    "anatom_site_general": "posterior torso",
                    "diagnosis_1": "Malignant" if i % 3 == 0 else "Benign",
                    "patient_id": f"IP_{1000000 + i // 2:07d}",
                },
                copyright_license=("CC-0", "CC-BY", "CC-BY-NC")[i % 3],
                attribution=f"Clinic {i % 2}",
            )
        )
    return records


def test_isic_cli_pull_through_worker(env, start_worker, monkeypatch):
    from workers.runtime import store
    from workers.submit import submit_task_job
    from workers.tasks.curation import pull

    records = _records()
    with IsicTestServer(records, page_size=3) as server:
        server.fail(records[-1].isic_id, "corrupt")
        start_worker({**env, "BIRTHMARK_ISIC_API_URL": server.url}, "curation")
        job_id, _ = submit_task_job(pull, kind="pull", params={"search": "", "limit": 8})
        job = _wait(job_id)
        assert job["status"] == "done", job
        st = store()
        keys = {o.key for o in st.list(f"raw/isic/{job_id}/")}
        for rec in records:
            assert f"raw/isic/{job_id}/{rec.isic_id}.jpg" in keys
        for name in (
            "metadata.csv",
            "attribution.txt",
            "images.csv",
            "pull.json",
            "licenses/CC-0.txt",
            "licenses/CC-BY.txt",
            "licenses/CC-BY-NC.txt",
        ):
            assert f"raw/isic/{job_id}/{name}" in keys
        record = json.loads(st.get(f"raw/isic/{job_id}/pull.json"))
        assert record["counts"]["listed"] == 8 and record["counts"]["uploaded"] == 8
        assert record["isic_cli_version"].startswith("12.")
        assert "Clinic 0" in st.get(f"raw/isic/{job_id}/attribution.txt").decode()

        # A second pull of the same query stores no image twice.
        job2, _ = submit_task_job(pull, kind="pull", params={"search": "", "limit": 8})
        assert _wait(job2)["status"] == "done"
        record2 = json.loads(st.get(f"raw/isic/{job2}/pull.json"))
        assert record2["counts"]["uploaded"] == 0 and record2["counts"]["already_stored"] == 8
        assert not [k for k in (o.key for o in st.list(f"raw/isic/{job2}/")) if k.endswith(".jpg")]

        # A bad query fails the job with isic-cli's own words, and no pull is marked complete.
        job3, _ = submit_task_job(pull, kind="pull", params={"search": "age_approx:[[", "limit": 2})
        failed = _wait(job3)
        assert failed["status"] == "failed"
        assert "search query" in failed["message"].lower()
        assert not st.exists(f"raw/isic/{job3}/pull.json")

        # Curating the pull: the corrupt download is rejected as unreadable.
        from workers.tasks.curation import run

        job4, _ = submit_task_job(run, kind="curate", params={"pulls": [job_id]})
        done = _wait(job4)
        assert done["status"] == "done", done
        from workers.training_run import load_manifest

        version, manifest = load_manifest(st)
        assert version == done["result"]["version"]
        corrupt = manifest.set_index("isic_id").loc[records[-1].isic_id]
        assert corrupt["verdict"] == "rejected" and "unreadable" in corrupt["phone_reasons"]
        dermo = manifest[manifest["image_type"] == "dermoscopic"]
        assert (dermo["phone_verdict"] == "rejected").all()

        # The daily schedule (what beat fires): pull the configured query, then publish.
        from workers.tasks.curation import scheduled

        monkeypatch.setenv("BIRTHMARK_CURATION_QUERY", "image_type:dermoscopic")
        monkeypatch.setenv("BIRTHMARK_CURATION_LIMIT", "3")
        from tests.conftest import reset_caches

        reset_caches()
        daily = scheduled()
        assert scheduled() == daily  # a second fire in the same minute is the same job
        result = _wait(daily)
        assert result["status"] == "done", result
        assert result["result"]["version"] == st.read_pointer("curated/LATEST")
        daily_pull = json.loads(st.get(f"raw/isic/{daily}/pull.json"))
        assert daily_pull["query"]["search"] == "image_type:dermoscopic"
        assert daily_pull["counts"]["listed"] == 3


def test_import_curate_review_versions(env, start_worker, tmp_path):
    from curation.synthetic import write_isic_sample
    from workers.cli import app
    from workers.runtime import store
    from workers.training_run import load_manifest

    folder = tmp_path / "sample"
    write_isic_sample(folder, n=40, seed=1)
    (folder / "ISIC_9000005.jpg").write_bytes(b"not really a jpeg")
    runner = CliRunner()
    start_worker(env, "curation")

    first = runner.invoke(
        app, ["curate", "import", str(folder), "--manifest", str(folder / "metadata.csv"), "--json"]
    )
    assert first.exit_code == 0, first.output
    again = runner.invoke(
        app, ["curate", "import", str(folder), "--manifest", str(folder / "metadata.csv"), "--json"]
    )
    assert json.loads(again.stdout)["created"] is False

    res = runner.invoke(app, ["curate", "run", "--json"])
    assert res.exit_code == 0, res.output
    v1 = json.loads(res.stdout)["result"]["version"]
    st = store()
    assert st.read_pointer("curated/LATEST") == v1
    _, m1 = load_manifest(st, v1)
    assert len(m1) == 40
    bad = m1.set_index("isic_id").loc["ISIC_9000005"]
    assert bad["verdict"] == "rejected" and "unreadable" in bad["phone_reasons"]
    # Groups never span splits.
    assert (m1.groupby("patient_id")["split"].nunique() <= 1).all()

    # Same inputs => same version, nothing new written.
    res = runner.invoke(app, ["curate", "run", "--json"])
    assert json.loads(res.stdout)["result"]["version"] == v1

    # A reviewer flips one image; the next version carries it, and diff says so.
    target = m1[m1["verdict"] != "accepted"]["isic_id"].iloc[0]
    res = runner.invoke(
        app, ["review", "accept", target, "--reason", "phone photo", "--reviewer", "ana"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["curate", "run", "--json"])
    v2 = json.loads(res.stdout)["result"]["version"]
    assert v2 != v1
    _, m2 = load_manifest(st, v2)
    assert m2.set_index("isic_id").loc[target, "verdict"] == "accepted"
    res = runner.invoke(app, ["curate", "diff", v1, v2, "--json"])
    changes = json.loads(res.stdout)
    assert [c["isic_id"] for c in changes] == [target]
    assert changes[0]["change"] == "verdict_changed"
    # v1 is immutable: still there, unchanged.
    _, m1_again = load_manifest(st, v1)
    assert m1_again.equals(m1)

    versions = runner.invoke(app, ["curate", "versions", "--json"])
    assert [v["version"] for v in json.loads(versions.stdout)] == [v1, v2]

    # Undo: back to the automatic verdict in the next version.
    res = runner.invoke(app, ["review", "undo", "--reviewer", "ana"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["curate", "run", "--json"])
    v3 = json.loads(res.stdout)["result"]["version"]
    assert v3 == v1

    sheet = tmp_path / "sheet.html"
    res = runner.invoke(app, ["review", "sheet", "--out", str(sheet), "--all"])
    assert res.exit_code == 0, res.output
    html = sheet.read_text()
    assert html.count("data:image/jpeg;base64") >= 30 and target in html


def test_import_missing_column_is_a_clear_error(env, tmp_path):
    from workers.cli import app

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "manifest.csv").write_text("file,kind,age\na.jpg,phone,40\n")
    res = CliRunner().invoke(app, ["curate", "import", str(folder)])
    assert res.exit_code != 0
    assert "image_id" in str(res.exception) or "image_id" in res.output


def test_import_fills_licences_by_source(env, tmp_path):
    import pandas as pd

    from workers import pulls
    from workers.cli import app
    from workers.runtime import store

    folder = tmp_path / "set"
    folder.mkdir()
    rows = []
    for i, source in enumerate(["PAD-UFES-20", "HAM10000", "PAD-UFES-20"]):
        image = make_lesion_image(np.random.default_rng(i), malignant=False, style="phone")
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(image))
        rows.append(f"{i}.jpg,phone,{source},IMG_{i},nv,0")
    (folder / "manifest.csv").write_text(
        "file,kind,source,image_id,diagnosis,malignant\n" + "\n".join(rows) + "\n"
    )
    runner = CliRunner()
    res = runner.invoke(app, ["curate", "import", str(folder), "--licence", "HAM10000=CC-BY-NC",
                              "--licence", "CC-BY", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    pull_id = json.loads(res.stdout)["pull_id"]
    table = pd.read_csv(io.BytesIO(store().get(f"{pulls.RAW_PREFIX}{pull_id}/images.csv")))
    assert dict(zip(table["isic_id"], table["copyright_license"], strict=True)) == {
        "IMG_0": "CC-BY", "IMG_1": "CC-BY-NC", "IMG_2": "CC-BY",
    }  # fmt: skip
    res = runner.invoke(app, ["curate", "import", str(folder), "--licence", "HAM10000="])
    assert res.exit_code != 0 and "SOURCE=LICENCE" in res.output

"""Real photos end to end: import -> curate -> train (train queue) -> score (score queue).

60 images of ../shared/data (phone and dermoscopic, both labels, in every grouped split), one
epoch at 32 px, so it checks the plumbing on real files, not the model's quality
(``benchmarks/transfer.py`` does that). Skipped with a reason when the folder is absent.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

import curation

pytestmark = pytest.mark.integration

# Images per (split, kind, label): every split holds both kinds and both classes.
PER_CELL = {"train": 5, "val": 3, "test": 7}


@pytest.fixture
def real_folder(shared_data, tmp_path):
    """A 60-image labelled folder in tmp_path (import refuses files outside the folder)."""
    raw = pd.read_csv(shared_data / "manifest.csv", dtype=str, keep_default_na=False)
    table = curation.read_labelled_manifest(shared_data / "manifest.csv")
    raw["split"] = curation.assign_splits(table).to_numpy()
    picked = pd.concat(
        rows.sort_values("image_id").head(PER_CELL[split])
        for (split, _, _), rows in raw.groupby(["split", "kind", "malignant"])
    )
    folder = tmp_path / "real"
    for name in picked["file"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / name, folder / name)
    picked.drop(columns="split").to_csv(folder / "manifest.csv", index=False)
    return folder, picked


def test_real_photos_import_curate_train_score(env, real_folder, start_worker, tmp_path):
    from workers import curating, pulls
    from workers.cli import app
    from workers.runtime import store

    folder, picked = real_folder
    assert len(picked) == 60
    st = store()
    record, created = pulls.import_folder(st, folder)
    assert created and record["counts"]["uploaded"] == 60
    summary = curating.publish_version(st)
    assert summary["rows"] == 60

    start_worker({**env, "BIRTHMARK_TRAIN_IMAGE_SIZE": "32"}, "train,score")
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--epochs", "1", "--wait", "--json"])
    assert res.exit_code == 0, res.output
    job = json.loads(res.stdout)
    assert job["status"] == "done", job
    result = job["result"]
    assert result["promoted"] and result["data_version"] == summary["version"]
    card = json.loads(st.get(f"models/{result['model_id']}/card.json"))
    assert card["data_counts"]["test"] > 0 and card["image_size"] == 32
    assert 0.0 <= card["metrics"]["overall"]["roc_auc"] <= 1.0
    assert card["metrics"]["phone_like"]["n"] > 0  # real phone photos are recognised as such

    # Score the phone photos with their metadata: one ok row per input, probabilities in [0, 1].
    out = tmp_path / "rows.jsonl"
    phones = sorted((folder / "phone").glob("*.jpg"))
    res = runner.invoke(
        app,
        ["score", str(folder / "phone"), "--metadata", str(folder / "manifest.csv")]
        + ["--out", str(out), "--json"],
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["key"].rsplit("/", 1)[1] for r in rows) == [p.name for p in phones]
    assert all(r["status"] == "ok" and 0.0 <= r["probability"] <= 1.0 for r in rows), rows
    assert {r["model_id"] for r in rows} == {result["model_id"]}

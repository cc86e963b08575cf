"""The k-fold estimate's folds are grouped and disjoint, and a tiny run pools every image once."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import models
from benchmarks import kfold
from benchmarks._stack import REPO
from benchmarks.transfer import _metadata, decode_all, load_table


def _table(n_groups: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        kind = "phone" if g % 4 == 0 else "dermoscopic"
        id_column = "patient_id" if kind == "phone" else "lesion_id"
        for i in range(int(rng.integers(1, 4))):
            rows.append(
                {
                    "file": f"{kind}/{g}-{i}.jpg",
                    "kind": kind,
                    "malignant": bool(rng.random() < 0.4),
                    "patient_id": None,
                    "lesion_id": None,
                    id_column: f"G{g}",
                }
            )
    return pd.DataFrame(rows)


def test_folds_keep_groups_together_and_cover_every_row_once():
    folded = kfold.assign_folds(_table(), 5)
    assert sorted(folded["fold"].unique()) == [0, 1, 2, 3, 4]
    assert folded.groupby("group")["fold"].nunique().max() == 1
    for f in range(5):
        split = kfold.split_for(folded, f)
        assert sum(len(part) for part in split.values()) == len(folded)
        groups = {name: set(part["group"]) for name, part in split.items()}
        assert not groups["train"] & groups["val"]
        assert not groups["train"] & groups["test"]
        assert not groups["val"] & groups["test"]
        assert 0.05 < len(split["val"]) / len(folded) < 0.3
        # Stratified: every test fold has phone and dermoscopic images of both labels.
        test = split["test"]
        assert test.groupby(["kind", "malignant"]).size().size == 4


def test_fold_assignment_is_reproducible_and_seeded():
    table = _table()
    a = kfold.assign_folds(table, 5)["fold"]
    assert a.equals(kfold.assign_folds(table, 5)["fold"])
    assert not a.equals(kfold.assign_folds(table, 5, seed=1)["fold"])


@pytest.mark.integration
def test_tiny_run_pools_every_image_once(shared_data, tmp_path):
    common = ["--folds", "2", "--limit", "5", "--epochs", "1", "--image-size", "32"]
    for fold in (0, 1):
        kfold.main(["run", "--fold", str(fold), *common, "--data", str(shared_data),
                    "--out", str(tmp_path)])  # fmt: skip
    results = tmp_path / "results.md"
    kfold.main(["summary", "--out", str(tmp_path), "--results", str(results)])
    pooled = pd.concat([pd.read_csv(tmp_path / f"fold{f}.csv") for f in (0, 1)])
    assert len(pooled) == 20 and pooled["file"].is_unique  # 5 per domain and label
    assert pooled["probability"].between(0, 1).all()
    text = results.read_text()
    assert "| phone | 10 (5) |" in text and "| dermoscopic | 10 (5) |" in text
    assert "| all | 20 (10) |" in text


@pytest.mark.integration
def test_a_sweep_recipe_runs_on_the_folds(shared_data, tmp_path):
    # Own processes: a recipe patches module globals (dropout, model builder) for its run.
    for fold in (0, 1):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.kfold",
                "run",
                "--fold",
                str(fold),
                "--folds",
                "2",
                "--limit",
                "5",
                "--recipe",
                "smoke",
                "--data",
                str(shared_data),
                "--out",
                str(tmp_path),
            ],  # fmt: skip
            check=True,
            capture_output=True,
            cwd=REPO,
        )
    assert json.loads((tmp_path / "fold0.json").read_text())["recipe"] == "smoke"
    text = kfold.summarise(tmp_path, ci_draws=50)
    assert text.startswith(
        "Recipe smoke: pooled out-of-fold predictions of 2 of 2 folds (20 images"
    )


@pytest.mark.integration
def test_rescoring_a_kept_model_reproduces_it_and_flips_change_it(shared_data, tmp_path):
    runs = tmp_path / "runs"
    kfold.main(["run", "--fold", "0", "--folds", "2", "--limit", "5", "--epochs", "1",
                "--image-size", "32", "--data", str(shared_data), "--out", str(runs),
                "--keep-model"])  # fmt: skip
    original = pd.read_csv(runs / "fold0.csv")
    card = json.loads((runs / "fold0.card.json").read_text())
    assert card["test_time_flips"] is True  # the default recipe
    again = kfold.rescore(runs, tmp_path / "same", shared_data, flips=True)
    np.testing.assert_allclose(pd.read_csv(again[0])["probability"], original["probability"],
                               atol=1e-6)  # fmt: skip
    plain = pd.read_csv(kfold.rescore(runs, tmp_path / "plain", shared_data, flips=False)[0])
    assert plain["file"].tolist() == original["file"].tolist()
    assert plain["probability"].between(0, 1).all()
    assert not np.allclose(plain["probability"], original["probability"], atol=1e-4)
    info = json.loads((tmp_path / "plain" / "fold0.json").read_text())
    assert info["recipe"] == "default without test-time flips"
    # Recalibrated on the fold's val split scored without flips, as training would have done.
    split = kfold.split_for(kfold._folded(load_table(shared_data), info), 0)
    net = models.load_checkpoint((runs / "fold0.safetensors").read_bytes(), card)
    val = split["val"]
    logits = models.Predictor(net, card, device="cpu", flips=False).logits(
        decode_all(shared_data, val["file"], size=32),
        [_metadata(r) for r in val.to_dict("records")],
    )
    expected = models.fit_calibration(logits, val["malignant"].astype(int).to_numpy())
    assert (info["temperature"], info["logit_bias"]) == pytest.approx(expected)
    assert (info["temperature"], info["logit_bias"]) != pytest.approx(
        (card["temperature"], card["logit_bias"])
    )
    with pytest.raises(SystemExit, match="--to must differ from --out"):
        kfold.rescore(runs, runs, shared_data, flips=True)
    (runs / "fold0.safetensors").unlink()
    with pytest.raises(SystemExit, match="fold0 has no kept model"):
        kfold.rescore(runs, tmp_path / "again", shared_data, flips=True)

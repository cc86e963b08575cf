"""How often a training run writes its resume checkpoint (run_training on a real local store)."""

from __future__ import annotations

import types

import pytest

import curation
import models
from tests.workers.helpers import publish_tiny_dataset
from workers import training_run
from workers.store import LocalStore


class _CountingStore(LocalStore):
    """Records, for each write of a resume checkpoint, the epoch it followed."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.epochs_reported = 0  # on_progress comes right after an epoch's checkpoint decision
        self.checkpoints: list[int] = []

    def put(self, key: str, data: bytes, **kwargs) -> None:
        if key.endswith("/resume.bin"):
            self.checkpoints.append(self.epochs_reported + 1)
        super().put(key, data, **kwargs)


@pytest.mark.parametrize(("interval_s", "written"), [(120.0, [1, 4, 6]), (0.0, [1, 2, 3, 4, 5, 6])])
def test_checkpoints_follow_the_first_epoch_the_last_and_the_interval(
    tmp_path, monkeypatch, interval_s, written
):
    # A clock that moves 50 s per read; two reads per written checkpoint, one otherwise. With a
    # 120 s interval: epoch 1 written (clock 50 -> 100), 2 and 3 not (150, 200: 50 and 100 s
    # later), 4 written (250), 5 not (350), 6 is the last.
    ticks = {"t": 0.0}

    def monotonic() -> float:
        ticks["t"] += 50.0
        return ticks["t"]

    monkeypatch.setattr(training_run, "time", types.SimpleNamespace(monotonic=monotonic))
    store = _CountingStore(tmp_path / "store")
    publish_tiny_dataset(store)
    config = models.TrainConfig(
        epochs=6, image_size=32, batch_size=8, augment=False, device="cpu", step_size=2
    )

    def progress(p: dict) -> None:
        store.epochs_reported = p["epoch"]

    outcome = training_run.run_training(
        store,
        "train-test",
        config=config,
        cache_dir=tmp_path / "cache",
        on_progress=progress,
        checkpoint_interval_s=interval_s,
    )
    assert store.checkpoints == written
    assert store.exists(f"models/{outcome['model_id']}/card.json")
    # The tiny set's test split has both classes, so the holdout AUC promotion uses is defined.
    assert 0.0 <= outcome["metrics"]["overall"]["roc_auc"] <= 1.0
    # The card names its holdout: which images it was judged on, checkable against another card.
    _, manifest = training_run.load_manifest(store, outcome["data_version"])
    test = training_run.trainable(manifest).query("split == 'test'")
    card = training_run.registry.read_card(store, outcome["model_id"])
    assert card["holdout"] == training_run.holdout_id(test) and card["holdout"]["rows"] == 6


class _Crash(Exception):
    pass


def test_a_resumed_run_keeps_the_data_version_it_started_on(tmp_path):
    # Killed after its first checkpoint; curation publishes a new LATEST before the redelivery.
    # The resumed run must go on with the version it started on, not mix two data sets under
    # the new version's name.
    store = LocalStore(tmp_path / "store")
    first = publish_tiny_dataset(store)
    config = models.TrainConfig(
        epochs=2, image_size=32, batch_size=8, augment=False, device="cpu", val_every=1
    )

    def crash(p: dict) -> None:
        raise _Crash

    with pytest.raises(_Crash):
        training_run.run_training(
            store, "train-r1", config=config, cache_dir=tmp_path / "cache", on_progress=crash
        )
    assert store.exists("models/runs/train-r1/resume.bin")
    _, manifest = training_run.load_manifest(store, first)
    manifest["malignant"] = 1.0 - manifest["malignant"]
    store.put("curated/v-newer/manifest.parquet", curation.manifest_to_parquet(manifest))
    store.write_pointer("curated/LATEST", "v-newer")

    outcome = training_run.run_training(
        store, "train-r1", config=config, cache_dir=tmp_path / "cache"
    )
    assert outcome["data_version"] == first
    with pytest.raises(ValueError, match="trains on curated version"):
        training_run.run_training(
            store, "train-r1", config=config, cache_dir=tmp_path / "cache", data_version="v-newer"
        )

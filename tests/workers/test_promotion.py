"""Promotion rules and the registry's pointer history, on a real local store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.workers.helpers import publish_tiny_champion
from workers import registry
from workers.store import LocalStore
from workers.training_run import should_promote


@pytest.mark.parametrize(
    ("new", "old", "margin", "promoted"),
    [
        (0.82, 0.80, 0.0, True),  # better
        (0.80, 0.82, 0.0, False),  # worse
        (0.80, 0.80, 0.0, False),  # a tie keeps the champion
        (0.815, 0.80, 0.02, False),  # better, but not by the margin
        (0.83, 0.80, 0.02, True),
        (math.nan, 0.80, 0.0, False),  # undefined on the holdout (one class)
        (0.70, math.nan, 0.0, True),  # the champion cannot be judged there
    ],
)
def test_should_promote(new, old, margin, promoted):
    decided, reason = should_promote(new, old, metric="roc_auc", margin=margin, champion="m-old")
    assert decided is promoted
    assert "roc_auc" in reason and "m-old" in reason


def test_promote_and_rollback_keep_history(tmp_path):
    store = LocalStore(tmp_path)
    first = publish_tiny_champion(store, seed=1)
    second = publish_tiny_champion(store, seed=2)
    assert registry.champion_id(store) == second
    assert registry.rollback(store) == first
    assert registry.champion_id(store) == first
    events = [(e["event"], e["model_id"], e["previous"]) for e in registry.history(store)]
    assert events == [
        ("promote", first, None),
        ("promote", second, first),
        ("promote", first, second),
    ]
    with pytest.raises(ValueError, match="unknown model"):
        registry.promote(store, "m-nope", reason="typo")


def test_published_models_are_immutable_and_the_id_covers_the_calibration(tmp_path):
    import torch

    import models

    store = LocalStore(tmp_path)
    torch.manual_seed(0)
    weights, card = models.dump_checkpoint(
        models.build_model("resnet10_image"), {"image_size": 64, "temperature": 1.5}
    )
    first = registry.publish_model(store, weights, card)
    # The same weights with another calibration, or scored with flips, are other models.
    recalibrated = registry.publish_model(store, weights, {**card, "temperature": 0.7})
    flipped = registry.publish_model(store, weights, {**card, "test_time_flips": True})
    assert len({first, recalibrated, flipped}) == 3
    assert registry.read_card(store, first)["temperature"] == 1.5
    assert registry.read_card(store, recalibrated)["temperature"] == 0.7
    # Publishing the same model again (a rerun) keeps what is stored, card and all.
    again = registry.publish_model(store, weights, {**card, "metrics": {"rerun": True}})
    assert again == first and "metrics" not in registry.read_card(store, first)
    assert registry.read_weights(store, first) == weights


def test_repeated_rollbacks_walk_back_through_the_champions(tmp_path):
    store = LocalStore(tmp_path)
    a, b, c = (publish_tiny_champion(store, seed=s) for s in (1, 2, 3))
    assert registry.rollback(store) == b
    assert registry.rollback(store) == a  # not c again: c is the model rolled back from
    with pytest.raises(ValueError, match="no earlier champion"):
        registry.rollback(store)
    registry.promote(store, c, reason="manual")
    assert registry.rollback(store) == a


def test_promotion_metric_must_be_a_higher_is_better_metric(monkeypatch, tmp_path):
    import typing

    import pydantic

    import models
    from workers import training_run
    from workers.settings import Settings

    allowed = typing.get_args(Settings.model_fields["promotion_metric"].annotation)
    assert set(allowed) == set(training_run.PROMOTION_METRICS)
    assert set(allowed) <= set(models.evaluate([0, 1], [0.2, 0.7]))
    for wrong in ("ece", "auc"):  # lower is better; a typo (NaN: never promotes)
        monkeypatch.setenv("BIRTHMARK_PROMOTION_METRIC", wrong)
        with pytest.raises(pydantic.ValidationError):
            Settings()
        with pytest.raises(ValueError, match="promotion metric"):
            training_run.run_training(
                LocalStore(tmp_path), "r", config=None, cache_dir=tmp_path, promotion_metric=wrong
            )


def test_the_champion_is_judged_on_images_decoded_for_its_own_input_size(tmp_path, monkeypatch):
    import torch

    import models
    from tests.workers.helpers import publish_tiny_dataset
    from workers import training_run

    store = LocalStore(tmp_path / "store")
    version = publish_tiny_dataset(store, n=8)
    torch.manual_seed(0)
    weights, card = models.dump_checkpoint(
        models.build_model("resnet10_image"), {"arch": "resnet10_image", "image_size": 256}
    )
    champion = registry.publish_model(store, weights, card)
    registry.promote(store, champion, reason="test")
    challenger = publish_tiny_champion(store, seed=1)  # image_size 64; promoted back below
    registry.rollback(store)
    _, manifest = training_run.load_manifest(store, version)
    test = training_run.trainable(manifest).query("split == 'test'")
    challenger_cache = training_run._image_cache(tmp_path / "cache", store, 32)  # 128 px
    seen = []
    evaluate = training_run.evaluate_model

    def recording(predictor, df, cache, **kw):
        seen.append((predictor.image_size, cache.size, predictor.device.type))
        return evaluate(predictor, df, cache, **kw)

    monkeypatch.setattr(training_run, "evaluate_model", recording)
    training_run.decide_promotion(
        store,
        challenger,
        {"overall": {"roc_auc": 0.5}},
        test,
        challenger_cache,
        prob=np.full(len(test), 0.5),
        metric="roc_auc",
        margin=0.0,
        device="cpu",
    )
    assert seen == [(256, 512, "cpu")]


def test_no_promotion_over_a_champion_that_changed_during_the_comparison(tmp_path, monkeypatch):
    import torch

    from tests.workers.helpers import publish_tiny_dataset
    from workers import training_run

    store = LocalStore(tmp_path / "store")
    version = publish_tiny_dataset(store, n=8)
    old = publish_tiny_champion(store, seed=1)
    manual = publish_tiny_champion(store, seed=2)
    challenger = publish_tiny_champion(store, seed=3)
    registry.promote(store, old, reason="back to the old champion")
    _, manifest = training_run.load_manifest(store, version)
    test = training_run.trainable(manifest).query("split == 'test'")
    evaluate = training_run.evaluate_model

    def operator_promotes_meanwhile(*args, **kw):
        registry.promote(store, manual, reason="by hand", actor="cli")
        return evaluate(*args, **kw)

    monkeypatch.setattr(training_run, "evaluate_model", operator_promotes_meanwhile)
    torch.manual_seed(0)
    decision = training_run.decide_promotion(
        store,
        challenger,
        {"overall": {"roc_auc": 1.0}},
        test,
        training_run._image_cache(tmp_path / "cache", store, 64),
        prob=np.full(len(test), 0.5),
        metric="roc_auc",
        margin=-1.0,  # the challenger wins on merit; only the changed champion stops it
    )
    assert not decision["promoted"] and "champion changed" in decision["reason"]
    assert registry.champion_id(store) == manual


def test_the_champion_is_not_judged_on_rows_it_trained_on(tmp_path, monkeypatch):
    # The champion learnt from a version where ISIC_0000003 was a train row; in the challenger's
    # version it is a test row (its lesion was linked to a patient since, say). Both are judged
    # on the other three test rows.
    import torch

    import curation
    import models
    from tests.workers.helpers import publish_tiny_dataset
    from workers import training_run

    store = LocalStore(tmp_path / "store")
    version = publish_tiny_dataset(store, n=16)
    _, manifest = training_run.load_manifest(store, version)
    older = manifest.assign(
        split=manifest["split"].mask(manifest["isic_id"] == "ISIC_0000003", "train")
    )
    store.put("curated/v-older/manifest.parquet", curation.manifest_to_parquet(older))
    torch.manual_seed(0)
    weights, card = models.dump_checkpoint(
        models.build_model("resnet10_image"),
        {"arch": "resnet10_image", "image_size": 64, "data_version": "v-older"},
    )
    champion = registry.publish_model(store, weights, card)
    registry.promote(store, champion, reason="test")
    challenger = publish_tiny_champion(store, seed=1)
    registry.rollback(store)
    test = training_run.trainable(manifest).query("split == 'test'")
    assert len(test) == 4 and "ISIC_0000003" in set(test["isic_id"])
    judged = []
    evaluate = training_run.evaluate_model

    def recording(predictor, df, cache, **kw):
        judged.append(sorted(df["isic_id"]))
        return evaluate(predictor, df, cache, **kw)

    monkeypatch.setattr(training_run, "evaluate_model", recording)
    decision = training_run.decide_promotion(
        store,
        challenger,
        {"overall": {"roc_auc": 1.0}},  # on all four rows; recomputed on the three
        test,
        training_run._image_cache(tmp_path / "cache", store, 64),
        prob=np.array([0.9, 0.8, 0.1, 0.2]),
        metric="roc_auc",
        margin=0.0,
        device="cpu",
    )
    assert judged == [sorted(set(test["isic_id"]) - {"ISIC_0000003"})]
    assert "judged on the 3 of 4 test rows" in decision["reason"]
    assert decision["holdout"] == training_run.holdout_id(test[test["isic_id"] != "ISIC_0000003"])

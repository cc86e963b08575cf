"""What a training job trains with: settings give the defaults, the job's params override them."""

from __future__ import annotations

from benchmarks._stack import reset_caches


def test_test_time_flips_come_from_settings_unless_the_job_says(env, monkeypatch):
    from workers.tasks.train import train_config

    assert train_config({}).test_time_flips is True  # the default
    assert train_config({"test_time_flips": False}).test_time_flips is False  # train --no-flips
    monkeypatch.setenv("BIRTHMARK_TRAIN_TEST_TIME_FLIPS", "false")
    reset_caches()
    assert train_config({}).test_time_flips is False
    assert train_config({"test_time_flips": True}).test_time_flips is True  # train --flips
    assert train_config({"test_time_flips": None}).test_time_flips is False  # flag not given


def test_progressive_scales_come_from_settings_as_json(env, monkeypatch):
    from models import TrainConfig
    from workers.tasks.train import train_config

    assert train_config({}).progressive_scales == TrainConfig().progressive_scales
    monkeypatch.setenv("BIRTHMARK_TRAIN_PROGRESSIVE_SCALES", "[0.5, 0.75]")
    reset_caches()
    config = train_config({"image_size": 64})
    assert config.progressive_scales == (0.5, 0.75)
    assert [config.input_size(e, step_epochs=2) for e in range(6)] == [32, 32, 48, 48, 64, 64]
    monkeypatch.setenv("BIRTHMARK_TRAIN_PROGRESSIVE_SCALES", "[]")
    reset_caches()
    assert train_config({}).progressive_scales == ()


def test_val_every_comes_from_settings(env, monkeypatch):
    from workers.tasks.train import train_config

    assert train_config({}).val_every == 5
    monkeypatch.setenv("BIRTHMARK_TRAIN_VAL_EVERY", "1")
    reset_caches()
    assert train_config({}).val_every == 1


def test_growth_queues_one_run_per_curated_version(env, monkeypatch):
    # The growth check runs hourly; the champion's data stays behind LATEST while the run it
    # queued trains, and for good when that challenger loses: one run per version, not per hour.
    import json

    import pandas as pd

    import curation
    from tests.workers.helpers import publish_tiny_champion, publish_tiny_dataset
    from workers import registry
    from workers.runtime import store
    from workers.tasks import train

    st = store()
    old = publish_tiny_dataset(st)
    champion = publish_tiny_champion(st)
    card = {**registry.read_card(st, champion), "data_version": old}
    st.put(f"models/{champion}/card.json", json.dumps(card).encode())
    _, manifest = train.load_manifest(st, old)
    grown = pd.concat([manifest, manifest.assign(isic_id=manifest["isic_id"] + "b")])
    st.put("curated/v-grown/manifest.parquet", curation.manifest_to_parquet(grown))
    st.write_pointer("curated/LATEST", "v-grown")
    queued = []
    monkeypatch.setattr(train.run, "apply_async", lambda *a, **k: queued.append(a))

    jobs = {train.check_growth.run() for _ in range(3)}
    assert len(jobs) == 1 and len(queued) == 1

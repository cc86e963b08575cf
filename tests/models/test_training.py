from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from models import (
    EpochState,
    Sample,
    TrainConfig,
    TrainingStopped,
    dump_checkpoint,
    encode_metadata,
    fit,
    load_checkpoint,
)
from models.evaluation import fit_calibration
from models.predictor import forward_views
from models.preprocess import to_tensor
from models.training import _ema_average, epochs_within


def _patch_image(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    """Both classes have a blob; the malignant one is darker and bluer. Noisy, so not trivial."""
    yy, xx = np.mgrid[:size, :size]
    image = np.array([190, 145, 125], np.float32) + rng.normal(0, 18, (size, size, 3))
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < (rng.uniform(0.15, 0.3) * size) ** 2
    tint = np.array([0.45, 0.45, 0.6] if label else [0.75, 0.65, 0.6], np.float32)
    image[mask] *= tint * rng.uniform(0.85, 1.15)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def _samples(n: int, *, seed: int, size: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = int(i % 3 == 0)  # imbalanced, like the real data
        image = _patch_image(rng, label, size)
        meta = {"age": int(rng.integers(20, 90)), "sex": ("male", "female")[i % 2], "site": "back"}
        out.append(Sample(load=lambda image=image: image, label=label, metadata=meta, group=None))
    return out


def test_config_validation():
    with pytest.raises(ValueError, match="arch"):
        TrainConfig(arch="vgg")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1)


def test_learns_a_visual_pattern():
    train, val = _samples(120, seed=1, size=64), _samples(45, seed=2, size=64)
    config = TrainConfig(epochs=3, image_size=64, device="cpu")  # augmentation on
    states: list[EpochState] = []
    result = fit(train, val, config=config, on_epoch=states.append)
    assert [s.epoch for s in states] == [1, 2, 3] and states[-1].epochs == 3
    assert result.history[-1]["val_auc"] > 0.9, result.history
    card = result.card
    assert card["val_metrics"]["roc_auc"] > 0.9 and 0.25 <= card["temperature"] <= 20
    assert -5 <= card["logit_bias"] <= 5
    assert card["data"] == {"n_train": 120, "n_train_pos": 40, "n_val": 45, "n_val_pos": 15}
    assert card["image_size"] == 64 and card["images_per_second"] > 0
    weights, full = dump_checkpoint(result.model, card)
    json.dumps(full)
    load_checkpoint(weights, full)


def _tiny_config(**kwargs) -> TrainConfig:
    defaults = dict(epochs=3, batch_size=8, image_size=32, step_size=1, device="cpu", seed=3)
    return TrainConfig(**{**defaults, **kwargs})


def test_resume_reproduces_an_uninterrupted_run():
    train, val = _samples(16, seed=5, size=32), _samples(6, seed=6, size=32)
    full = fit(train, val, config=_tiny_config())

    blobs: list[bytes] = []
    fit(train, val, config=_tiny_config(epochs=1), on_epoch=lambda s: blobs.append(s.resume_blob()))
    assert not blobs[0].startswith(b"\x80")  # not a pickle
    resumed = fit(train, val, config=_tiny_config(), resume=blobs[0])

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for name, tensor in full_state.items():
        torch.testing.assert_close(resumed_state[name], tensor, msg=name)
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"])


def test_should_stop_ends_the_run_between_batches_and_its_blob_resumes_it():
    train, val = _samples(16, seed=5, size=32), _samples(6, seed=6, size=32)  # 2 batches/epoch
    full = fit(train, val, config=_tiny_config())

    asked: list[int] = []
    blobs: list[bytes] = []

    def should_stop() -> bool:  # asked before each epoch and after each batch: 3 per epoch
        asked.append(len(blobs))
        return len(asked) == 5  # after epoch 2's first batch

    with pytest.raises(TrainingStopped, match="inside an epoch, after 1 complete") as stopped:
        fit(
            train,
            val,
            config=_tiny_config(),
            on_epoch=lambda s: blobs.append(s.resume_blob()),
            should_stop=should_stop,
        )
    assert stopped.value.epochs_done == 1 and len(blobs) == 1
    assert stopped.value.resume_blob is None  # the half-trained epoch 2 has nothing to keep
    assert asked == [0, 0, 0, 1, 1]  # ... and it never reached on_epoch

    resumed = fit(train, val, config=_tiny_config(), resume=blobs[0])
    for name, tensor in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, msg=name)

    # Stopped between epochs 2 and 3 (the 7th question), with no on_epoch to keep a blob: the
    # exception packs the state after epoch 2, and it resumes the run exactly.
    calls = iter(range(1, 100))
    with pytest.raises(TrainingStopped, match="between epochs, after 2 complete") as stopped:
        fit(train, val, config=_tiny_config(), should_stop=lambda: next(calls) == 7)
    resumed = fit(train, val, config=_tiny_config(), resume=stopped.value.resume_blob())
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for name, tensor in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, msg=name)


def test_resume_refuses_a_different_config():
    train, val = _samples(12, seed=5, size=32), _samples(4, seed=6, size=32)
    blobs: list[bytes] = []
    fit(train, val, config=_tiny_config(epochs=1), on_epoch=lambda s: blobs.append(s.resume_blob()))
    with pytest.raises(ValueError, match="lr: 0.001 -> 0.01"):
        fit(train, val, config=_tiny_config(lr=0.01), resume=blobs[0])
    with pytest.raises(ValueError, match="labels must be 0"):
        fit([*train[:3], train[3]._replace(label=2)], val, config=_tiny_config())
    with pytest.raises(ValueError, match="blob"):
        fit(train, val, config=_tiny_config(), resume=b"garbage bytes")


def test_threaded_loading_matches_serial():
    train, val = _samples(16, seed=7, size=32), _samples(4, seed=8, size=32)
    serial = fit(train, val, config=_tiny_config(epochs=1, arch="resnet10_image"))
    threaded = fit(train, val, config=_tiny_config(epochs=1, arch="resnet10_image", num_workers=2))
    assert serial.history[0]["train_loss"] == pytest.approx(threaded.history[0]["train_loss"])


def test_auxiliary_diagnosis_head_trains_resumes_and_stays_out_of_the_checkpoint():
    names = ("mel", "nv", "Seborrheic keratosis", None)
    train = [
        s._replace(diagnosis=names[i % 4]) for i, s in enumerate(_samples(16, seed=9, size=32))
    ]
    val = _samples(6, seed=10, size=32)
    config = _tiny_config(aux_diagnosis_weight=0.5)
    full = fit(train, val, config=config)
    plain = fit(train, val, config=_tiny_config(aux_diagnosis_weight=0.0))
    # The auxiliary loss changes training (the losses differ) but not what is saved or scored.
    assert full.history[-1]["train_loss"] != pytest.approx(plain.history[-1]["train_loss"])
    assert full.model.state_dict().keys() == plain.model.state_dict().keys()
    weights, card = dump_checkpoint(full.model, full.card)
    load_checkpoint(weights, card)
    assert card["config"]["aux_diagnosis_weight"] == 0.5

    blobs: list[bytes] = []
    fit(train, val, config=_tiny_config(epochs=1, aux_diagnosis_weight=0.5),
        on_epoch=lambda s: blobs.append(s.resume_blob()))  # fmt: skip
    resumed = fit(train, val, config=config, resume=blobs[0])
    for name, tensor in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, msg=name)
    with pytest.raises(ValueError, match="aux_diagnosis_weight"):
        TrainConfig(aux_diagnosis_weight=-1)


def test_weights_are_averaged_over_the_last_learning_rate_step_and_resume_keeps_the_average():
    from safetensors.torch import load as load_tensors

    train, val = _samples(16, seed=11, size=32), _samples(6, seed=12, size=32)
    # The lr steps after epoch 2: average epochs 3-4.
    config = _tiny_config(epochs=4, step_size=2, weight_average="swa")
    blobs: list[bytes] = []
    full = fit(train, val, config=config, on_epoch=lambda s: blobs.append(s.resume_blob()))
    assert full.card["averaged_updates"] == 2
    epoch_weights = [load_tensors(blob) for blob in blobs]
    for name, param in full.model.named_parameters():
        mean = (epoch_weights[2][f"model.{name}"] + epoch_weights[3][f"model.{name}"]) / 2
        torch.testing.assert_close(param.detach(), mean, msg=name)

    last_only = fit(train, val, config=_tiny_config(epochs=4, step_size=2, weight_average="none"))
    assert last_only.card["averaged_updates"] == 0
    for name, param in last_only.model.named_parameters():
        torch.testing.assert_close(param.detach(), epoch_weights[3][f"model.{name}"], msg=name)

    resumed = fit(train, val, config=config, resume=blobs[2])  # one epoch into the average
    for name, tensor in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, msg=name)
    assert resumed.card["val_metrics"] == pytest.approx(full.card["val_metrics"])


def test_the_saved_weights_are_an_ema_of_every_step_with_a_ramped_decay():
    from safetensors.torch import load as load_tensors

    # The decay ramps up as (1 + n) / (10 + n): the first update keeps 10% of the running mean.
    running, current = [torch.zeros(3)], [torch.ones(3)]
    ema = _ema_average(0.998)
    ema(running, current, torch.tensor(0))
    torch.testing.assert_close(running[0], torch.full((3,), 0.9))
    ema(running, current, torch.tensor(10_000))  # long runs: the configured decay
    torch.testing.assert_close(running[0], torch.full((3,), 0.9 + 0.1 * 0.002))

    train, val = _samples(16, seed=13, size=32), _samples(6, seed=14, size=32)
    blobs: list[bytes] = []
    config = _tiny_config(ema_decay=0.5)  # the default, "ema"
    full = fit(train, val, config=config, on_epoch=lambda s: blobs.append(s.resume_blob()))
    assert full.card["averaged_updates"] == 3 * 2  # 3 epochs of 2 batches: one update per step
    last = load_tensors(blobs[-1])
    for name, param in full.model.named_parameters():
        torch.testing.assert_close(param.detach(), last[f"average.module.{name}"], msg=name)
    assert any(
        not torch.equal(param.detach(), last[f"model.{name}"])
        for name, param in full.model.named_parameters()
    )
    with pytest.raises(ValueError, match="weight_average"):
        TrainConfig(weight_average="mean")
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_a_time_budget_shortens_the_run_after_the_first_epoch_and_a_resume_keeps_it():
    assert epochs_within(27 * 60, 23.4, 60) == 60  # this machine's default run fits
    assert epochs_within(27 * 60, 45.0, 60) == 36  # one twice as slow runs 36 epochs
    assert epochs_within(1.0, 45.0, 40) == 1  # always at least one
    assert epochs_within(60.0, 0.0, 40) == 40
    # Planned again after the second epoch, at its pace (2026-11-30 here: 29.2 s, then 26.6 s).
    assert epochs_within(27 * 60, 29.2, 60) == 55
    assert epochs_within(27 * 60, 26.6, 60, done=2, spent_s=29.2 + 26.6) == 60
    assert epochs_within(27 * 60, 45.0, 60, done=2, spent_s=95.0) == 2 + 33
    assert epochs_within(10.0, 5.0, 60, done=2, spent_s=50.0) == 2  # never fewer than done

    train, val = _samples(16, seed=15, size=32), _samples(6, seed=16, size=32)
    states: list[EpochState] = []
    blobs: list[bytes] = []

    def keep(state: EpochState) -> None:
        states.append(state)
        blobs.append(state.resume_blob())

    config = _tiny_config(epochs=3, time_budget_s=1e-9, step_size=None)
    short = fit(train, val, config=config, on_epoch=keep)
    assert len(short.history) == 1 and short.card["epochs_run"] == 1
    assert [s.epochs for s in states] == [1]  # progress reports the shortened run
    # Redelivered after its last epoch, it does not train the two it dropped.
    resumed = fit(train, val, config=config, resume=blobs[0])
    assert len(resumed.history) == 1
    for name, tensor in short.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, msg=name)

    roomy = fit(train, val, config=_tiny_config(epochs=3, time_budget_s=3600.0))
    assert roomy.card["epochs_run"] == 3
    with pytest.raises(ValueError, match="time_budget_s"):
        TrainConfig(time_budget_s=0)


def test_test_time_flips_are_calibrated_on_flipped_val_logits_and_recorded_in_the_card():
    train, val = _samples(16, seed=17, size=32), _samples(12, seed=18, size=32)
    flipped = fit(train, val, config=_tiny_config(test_time_flips=True))
    plain = fit(train, val, config=_tiny_config(test_time_flips=False))
    assert flipped.card["test_time_flips"] is True and plain.card["test_time_flips"] is False
    for name, tensor in plain.model.state_dict().items():  # flips change scoring, not training
        torch.testing.assert_close(flipped.model.state_dict()[name], tensor, msg=name)
    labels = np.array([s.label for s in val])
    method = TrainConfig().colour_constancy
    batch = torch.stack([to_tensor(s.load(), size=32, colour_constancy_method=method) for s in val])
    meta = torch.from_numpy(encode_metadata([s.metadata for s in val]))
    fitted = {}
    for result, flips in ((flipped, True), (plain, False)):
        with torch.inference_mode():
            logits = forward_views(result.model.eval(), batch, meta, flips=flips).numpy()
        fitted[flips] = fit_calibration(logits, labels)
        assert (result.card["temperature"], result.card["logit_bias"]) == pytest.approx(
            fitted[flips], rel=1e-4, abs=1e-5
        )
    assert fitted[True] != pytest.approx(fitted[False], abs=1e-4), fitted


def test_a_machine_that_slows_down_stops_within_the_budget(monkeypatch):
    import types

    import models.training

    # A fake clock: epochs take 20 s each (10 s of training, then val), until the machine slows
    # down to 60 s an epoch from the third epoch on (three clock reads per epoch).
    calls = {"n": 0}

    def perf_counter() -> float:
        calls["n"] += 1
        n = calls["n"]
        return sum(10.0 if i <= 6 else 30.0 for i in range(1, n + 1))

    monkeypatch.setattr(models.training, "time", types.SimpleNamespace(perf_counter=perf_counter))
    train, val = _samples(16, seed=19, size=32), _samples(6, seed=20, size=32)
    states: list[EpochState] = []
    config = _tiny_config(epochs=8, time_budget_s=100.0, val_every=1)
    result = fit(train, val, config=config, on_epoch=states.append)
    # Planned 5 epochs (100 s at 20 s); the third took 60 s (100 s spent), so the fourth,
    # at that pace, would end at 160 s: not started.
    assert [s.epochs for s in states] == [5, 5, 5]
    assert result.card["epochs_run"] == 3
    assert [round(h["seconds"]) for h in result.history] == [20, 20, 60]


def test_progressive_resizing_trains_each_phase_at_its_size_and_calibrates_at_image_size(
    monkeypatch,
):
    import models.training

    assert [TrainConfig(epochs=80, progressive_scales=(0.72, 0.86)).input_size(e)
            for e in (0, 26, 27, 53, 54, 79)] == [80, 80, 96, 96, 112, 112]  # fmt: skip
    assert TrainConfig(image_size=64, progressive_scales=(0.1,)).input_size(0) == 32  # floor
    assert TrainConfig(progressive_scales=(0.5,)).input_size(0, step_epochs=5) == 56
    with pytest.raises(ValueError, match="progressive_scales"):
        TrainConfig(progressive_scales=(0.5, 1.5))

    sizes: list[int] = []
    to_tensor_ = models.training.to_tensor

    def spy(image, *, size, **kwargs):
        sizes.append(size)
        return to_tensor_(image, size=size, **kwargs)

    monkeypatch.setattr(models.training, "to_tensor", spy)
    train, val = _samples(16, seed=21, size=64), _samples(12, seed=22, size=64)
    config = _tiny_config(
        image_size=64, progressive_scales=(0.5, 0.75), test_time_flips=False, val_every=1
    )
    result = fit(train, val, config=config)
    assert [h["image_size"] for h in result.history] == [32, 48, 64]
    # Each epoch's training, batch-norm re-estimation and val pass ran at that epoch's size.
    per_epoch = len(train) - len(train) % 8 + 16 + len(val)  # batches, 16 for BN, val
    assert sizes[: 3 * per_epoch] == [32] * per_epoch + [48] * per_epoch + [64] * per_epoch
    assert result.card["image_size"] == 64
    # The calibration was fitted on logits at image_size, as the Predictor will score.
    method = config.colour_constancy
    batch = torch.stack(
        [to_tensor_(s.load(), size=64, colour_constancy_method=method) for s in val]
    )
    meta = torch.from_numpy(encode_metadata([s.metadata for s in val]))
    with torch.inference_mode():
        logits = forward_views(result.model.eval(), batch, meta, flips=False).numpy()
    labels = np.array([s.label for s in val])
    assert (result.card["temperature"], result.card["logit_bias"]) == pytest.approx(
        fit_calibration(logits, labels), rel=1e-4, abs=1e-5
    )

    blobs: list[bytes] = []
    fit(train, val, config=config, on_epoch=lambda s: blobs.append(s.resume_blob()))
    resumed = fit(train, val, config=config, resume=blobs[1])  # from the 48 px epoch
    assert [h["image_size"] for h in resumed.history] == [32, 48, 64]
    for name, tensor in result.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, msg=name)


def test_a_run_saved_before_progressive_resizing_resumes_only_without_it():
    from dataclasses import asdict

    from models.training import _check_resumable

    before = {k: v for k, v in asdict(TrainConfig(epochs=60)).items() if k != "progressive_scales"}
    with pytest.raises(ValueError, match=r"progressive_scales: \[\] -> \[0.72, 0.86\]"):
        _check_resumable(before, TrainConfig())  # would train its later epochs at 96 px
    _check_resumable(before, TrainConfig(progressive_scales=()))


def test_a_time_budget_plans_progressive_epochs_by_their_size():
    from models.training import SIZE_COST_EXPONENT, _size_cost

    # Six epochs, StepLR every two: epochs 1-2 at 32 px, then 128 px, which costs 4 ** 1.5 = 8
    # times as much. The first epoch took 10 s; the other five cost 10 + 4 x 80 = 330 s. Five
    # epochs (steps of 2): 10 + 3 x 80 = 250 s; four: 170 s; three (steps of 1): 160 s.
    assert SIZE_COST_EXPONENT == 1.5
    config = TrainConfig(epochs=6, image_size=128, progressive_scales=(0.25,))
    cost = _size_cost(config, 32)
    assert [cost(e, 6) for e in range(6)] == [1, 1, 8, 8, 8, 8]
    assert epochs_within(340.0, 10.0, 6, done=1, spent_s=10.0, cost=cost) == 6
    assert epochs_within(339.0, 10.0, 6, done=1, spent_s=10.0, cost=cost) == 5
    assert epochs_within(259.0, 10.0, 6, done=1, spent_s=10.0, cost=cost) == 4
    assert epochs_within(179.0, 10.0, 6, done=1, spent_s=10.0, cost=cost) == 3
    # Planned as if every epoch cost what the first did, six would "fit" in 60 s; they take 340.
    assert epochs_within(60.0, 10.0, 6, done=1, spent_s=10.0) == 6
    assert epochs_within(60.0, 10.0, 6, done=1, spent_s=10.0, cost=cost) == 1


def test_the_per_epoch_val_pass_runs_every_val_every_epochs_and_changes_no_weight():
    train, val = _samples(16, seed=23, size=32), _samples(12, seed=24, size=32)
    every = fit(train, val, config=_tiny_config(epochs=4, val_every=1))
    sparse = fit(train, val, config=_tiny_config(epochs=4, val_every=3))
    # The first epoch, every third and the last; the others record no val AUC.
    assert [h["epoch"] for h in sparse.history if "val_auc" in h] == [1, 3, 4]
    assert all("val_auc" in h for h in every.history)
    for epoch in (0, 2, 3):  # the same model at the same epochs
        assert sparse.history[epoch]["val_auc"] == every.history[epoch]["val_auc"]
    for name, tensor in every.model.state_dict().items():
        torch.testing.assert_close(sparse.model.state_dict()[name], tensor, msg=name)
    assert sparse.card["temperature"] == every.card["temperature"]
    with pytest.raises(ValueError, match="val_every"):
        TrainConfig(val_every=0)


def test_the_budget_prices_val_passes_and_a_run_stopped_without_one_is_evaluated_afresh(
    monkeypatch,
):
    import types

    import models.training
    from models.training import _Batcher, _epoch_order, _recalibrate_batch_norm, _size_cost

    # Six epochs with a val pass after epochs 1, 5 and 6, costing a quarter of the training.
    cost = _size_cost(TrainConfig(epochs=6, progressive_scales=()), 112, eval_share=0.25)
    assert [cost(e, 6) for e in range(6)] == [1.25, 1, 1, 1, 1.25, 1.25]
    assert [cost(e, 4) for e in range(4)] == [1.25, 1, 1, 1.25]

    # A fake clock, three reads an epoch (start, training done, val done): 10 s a read until
    # the machine slows to 30 s a read in the second epoch. Epoch 1: 10 s of training + 10 s
    # of val (share 1); 7 of 8 epochs planned: 20 + 4 x 10 + 2 x 20 (val after epochs 5 and
    # 7) = 100. Epoch 2 (no val pass) trains 30 s; replanned, a third epoch, the last, with its
    # val pass (30 + 30 s), would end at 140 s: the run stops after epoch 2.
    calls = {"n": 0}

    def perf_counter() -> float:
        calls["n"] += 1
        return sum(10.0 if i <= 3 else 30.0 for i in range(1, calls["n"] + 1))

    monkeypatch.setattr(models.training, "time", types.SimpleNamespace(perf_counter=perf_counter))
    train, val = _samples(16, seed=25, size=32), _samples(12, seed=26, size=32)
    config = _tiny_config(
        epochs=8, time_budget_s=100.0, weight_average="none", test_time_flips=False
    )
    states: list[EpochState] = []
    result = fit(train, val, config=config, on_epoch=states.append)
    assert [s.epochs for s in states] == [7, 2]
    assert "val_auc" in result.history[0] and "val_auc" not in result.history[1]
    assert np.isnan(states[1].val_auc)
    # Its batch-norm statistics were re-estimated after the last epoch (doing it again changes
    # nothing), and the calibration was fitted on that model's val logits, not epoch 1's.
    model = result.model
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    batcher = _Batcher(train, encode_metadata([s.metadata for s in train]), config)
    order = _epoch_order(np.array([s.label for s in train]), balance=True, seed=config.seed)
    _recalibrate_batch_norm(model, batcher, order, "cpu", images=256, batch_size=8)
    for name, tensor in before.items():
        torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    batch = torch.stack(
        [to_tensor(s.load(), size=32, colour_constancy_method=config.colour_constancy) for s in val]
    )
    meta = torch.from_numpy(encode_metadata([s.metadata for s in val]))
    with torch.inference_mode():
        logits = model.eval()(batch, meta).numpy()
    assert (result.card["temperature"], result.card["logit_bias"]) == pytest.approx(
        fit_calibration(logits, np.array([s.label for s in val])), rel=1e-4, abs=1e-5
    )

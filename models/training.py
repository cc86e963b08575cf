"""The training loop: focal loss, AdamW + StepLR, class balancing, phone-capture augmentation.

Reproducible by construction: every random choice in epoch ``e`` (sampling order, augmentation,
dropout) is seeded from ``(config.seed, e)``, so a run resumed from an epoch's blob continues
exactly as the uninterrupted run would have (on CPU; CUDA kernels are not bit-deterministic).

``image_size`` defaults to 112 and ``epochs`` to 80 with progressive resizing: the three StepLR
phases train at 80, 96 and 112 px. At 112 px, 40 epochs (the pixels of 30 at 128 px) beat 30 at
128 px on 8 seeds, 60 beat 40 on every grouped fold of the real photos, and 80 progressive epochs
(the pixels of 60 at 112 px, though ~15% more time on this CPU) beat 60 on the folds; a 224 px
epoch costs about 4x more on a 2-core CPU and the small ResNet-10 gains little from it on ~200 px
sources. ``time_budget_s`` shortens a run on a slower machine (here it ran 72-74 of the 80 while
every epoch had a val pass; with ``val_every=5``, all 80).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from .augment import PhoneCaptureAugment
from .checkpoint import CLASSES
from .diagnosis import DIAGNOSIS_GROUPS, diagnosis_group
from .evaluation import evaluate, fit_calibration
from .losses import focal_loss
from .metadata import METADATA_DIM, encode_metadata
from .predictor import forward_views, resolve_device
from .preprocess import COLOUR_CONSTANCY, IMAGENET_MEAN, IMAGENET_STD, to_tensor
from .resnet10 import ARCHS, TRUNK_FEATURES, build_model
from .resume import pack_train_state, restore_train_state

__all__ = ["EpochState", "Sample", "TrainConfig", "TrainResult", "TrainingStopped", "fit"]

WEIGHT_AVERAGES = ("ema", "swa", "none")

# Fields that may differ between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = frozenset(
    {"epochs", "device", "num_workers", "time_budget_s", "test_time_flips", "val_every"}
)
# What a run did before a field existed, where that is not the field's default today.
_BEFORE_THE_FIELD = {"progressive_scales": []}


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "resnet10_multimodal"
    epochs: int = 80
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # StepLR: multiply the learning rate by step_gamma every step_size epochs; None = a third of the
    # run, so the schedule keeps its shape when the number of epochs changes.
    step_size: int | None = None
    step_gamma: float = 0.5
    # 0.5 = no class weighting inside the loss: with balance=True the sampler already shows both
    # classes equally often, and weighting twice would tilt the model towards one class.
    focal_alpha: float = 0.5
    focal_gamma: float = 2.0
    image_size: int = 112
    # Progressive resizing: the StepLR phases before the last train at these fractions of
    # ``image_size`` (rounded to 8 px, at least 32); the last phase, and scoring, at ``image_size``.
    # Small early epochs are cheap, so the same time buys more of them.
    progressive_scales: tuple[float, ...] = (0.72, 0.86)  # 80 and 96 px at image_size 112
    augment: bool = True
    # Phone-capture augmentation at full strength slowed learning on both domains in
    # benchmarks/transfer_results.md (variants b vs a, g vs f); 0.3 keeps its distortions mild.
    augment_strength: float = 0.3
    balance: bool = True  # sample classes with equal probability (with replacement)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision; only takes effect on CUDA
    num_workers: int = 0  # > 0: threads that prepare the next batches while the model trains
    # Re-estimate batch-norm statistics on this many un-augmented training images after each epoch
    # ("precise BN"). Small runs take too few steps for the running averages to settle, and the
    # stale averages wreck eval-mode outputs (val AUC ~0.5 where batch statistics give 1.0).
    bn_recalibration_images: int = 256
    # That re-estimation and the per-epoch val pass are monitoring only (they change no trained
    # weight: the saved ones get their own batch-norm pass), and cost ~11% of an epoch on CPU, so
    # they run after the first epoch, every ``val_every``-th and the last; the others record no
    # val AUC. 1 = every epoch. At 5, an 80-epoch run saved 139 s on 2 cores.
    val_every: int = 5
    # Input colour constancy (models.preprocess.COLOUR_CONSTANCY), applied after augmentation and
    # again by the Predictor (the card records it): removes the dermoscope-vs-ambient light cast.
    # Shades of gray beat none on both test domains in benchmarks/transfer_results.md.
    colour_constancy: str = "shades_of_gray"
    # Weight of an auxiliary cross-entropy on the diagnosis group (models.diagnosis) predicted from
    # the image trunk; 0 switches it off. Samples without a known diagnosis do not take part.
    aux_diagnosis_weight: float = 0.5
    # Which weights are saved: "ema" = an exponential moving average of the weights over the
    # optimiser steps (decay ``ema_decay``, ramped up as (1 + n) / (10 + n) so the random start
    # washes out); "swa" = the mean of the weights at the end of each epoch of the last
    # learning-rate step; "none" = the last step's. Batch norm is re-estimated for an average.
    # On the real photos (8 seeds, README) EMA raised dermoscopic test AUC by 0.007-0.008 over the
    # last epoch's weights and cut its seed-to-seed spread from 0.016 to 0.004-0.008; SWA moved it
    # by +0.006 and -0.010 on 2 seeds, i.e. no effect beyond seed noise.
    # The ramp binds before ``ema_decay`` does: (1 + n) / (10 + n) reaches 0.998 only after ~4,500
    # steps, and a default run makes ~3,300 (0.9973 at its end), so ``ema_decay`` 0.998 and 0.999
    # give bit-identical weights there (checked on a k-fold fold); it matters for longer runs.
    weight_average: str = "ema"
    ema_decay: float = 0.998
    # Score with the mean logit over the image and its three flips (models.predictor.forward_views).
    # The final val logits, and so the calibration, are computed the same way and the card records
    # it, so scoring does what was calibrated. On five grouped folds of the real photos: dermoscopic
    # AUC +0.005 (5 of 5 folds up), ECE 0.027 -> 0.023; a dihedral eight gained nothing more.
    # Per-epoch val AUC stays one view (cheap); scoring pays four forward passes per image.
    test_time_flips: bool = True
    # Wall-clock seconds for the epochs. After the first epoch, a run whose epochs would not fit
    # at that epoch's pace is shortened to those that do (the StepLR schedule shrinks with it);
    # after the second, the plan is made again at its pace (up to ``epochs``): the first epoch
    # is the slowest. Later, an epoch that would end past the budget at the last one's pace is
    # not started. The card's ``epochs_run`` says how many ran. None = no budget.
    time_budget_s: float | None = None

    @property
    def lr_step_epochs(self) -> int:
        """Epochs between learning-rate steps: ``step_size``, else a third of the run."""
        return _step_epochs(self, self.epochs)

    def input_size(self, epoch: int, step_epochs: int | None = None) -> int:
        """Training input size of ``epoch`` (from 0) when StepLR steps every ``step_epochs``."""
        phase = epoch // (step_epochs or self.lr_step_epochs)
        if phase >= len(self.progressive_scales):
            return self.image_size
        size = 8 * round(self.image_size * self.progressive_scales[phase] / 8)
        return min(self.image_size, max(32, size))

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for name in ("epochs", "batch_size", "step_size", "image_size", "val_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if self.colour_constancy not in COLOUR_CONSTANCY:
            raise ValueError(
                f"colour_constancy must be one of {tuple(COLOUR_CONSTANCY)}, "
                f"got {self.colour_constancy!r}"
            )
        object.__setattr__(self, "progressive_scales", tuple(self.progressive_scales))  # JSON: list
        if not all(0.0 < scale <= 1.0 for scale in self.progressive_scales):
            raise ValueError(f"progressive_scales must be in (0, 1], got {self.progressive_scales}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not self.aux_diagnosis_weight >= 0:
            raise ValueError(f"aux_diagnosis_weight must be >= 0, got {self.aux_diagnosis_weight}")
        if self.weight_average not in WEIGHT_AVERAGES:
            raise ValueError(
                f"weight_average must be one of {WEIGHT_AVERAGES}, got {self.weight_average!r}"
            )
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {self.time_budget_s}")


class Sample(NamedTuple):
    load: Callable[[], Image.Image]
    label: int  # 1 = malignant
    metadata: Mapping | None = None
    group: str | None = None  # patient or lesion id (splits are made upstream, by group)
    diagnosis: str | None = None  # free text or code; feeds the auxiliary diagnosis-group loss


class TrainResult(NamedTuple):
    model: nn.Module
    card: dict
    history: list[dict]


@dataclass
class EpochState:
    """What ``on_epoch`` receives after each completed epoch (``epoch`` counts from 1)."""

    epoch: int
    epochs: int
    train_loss: float
    val_auc: float  # NaN after an epoch without a val pass (TrainConfig.val_every)
    seconds: float
    images_per_second: float
    lr: float
    image_size: int  # the epoch's input size (progressive resizing), else config.image_size
    history: list[dict]
    _pack: Callable[[], bytes] = field(repr=False)

    def resume_blob(self) -> bytes:
        """Everything needed to continue training after this epoch (safetensors + JSON).

        Call it inside ``on_epoch``: it packs the live model and optimizer, so after ``on_epoch``
        returns and training moves on, it would describe a later state.
        """
        return self._pack()


class TrainingStopped(RuntimeError):
    """``fit`` gave up on request (its ``should_stop``) between two training batches.

    ``epochs_done`` epochs were completed and handed to ``on_epoch``. Stopped between two epochs,
    ``resume_blob()`` packs the state after the last one (as ``EpochState.resume_blob`` would);
    stopped inside an epoch it is None: that epoch is lost, and a caller that wants to continue
    resumes from the last blob it kept.
    """

    def __init__(self, epochs_done: int, resume_blob: Callable[[], bytes] | None = None) -> None:
        where = "between epochs" if resume_blob is not None else "inside an epoch"
        super().__init__(f"stopped on request {where}, after {epochs_done} complete epochs")
        self.epochs_done = epochs_done
        self.resume_blob = resume_blob


class _WithAuxHead(nn.Module):
    """The network and its training-only diagnosis head, as one module for the optimiser."""

    def __init__(self, net: nn.Module, aux: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.aux = aux


def _ema_average(decay: float) -> Callable:
    """``multi_avg_fn`` for ``AveragedModel``: an EMA whose decay ramps up as (1 + n) / (10 + n)."""

    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], updates) -> None:
        n = float(updates)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return average


def epochs_within(
    budget_s: float,
    epoch_s: float,
    epochs: int,
    *,
    done: int = 0,
    spent_s: float = 0.0,
    cost: Callable[[int, int], float] | None = None,
) -> int:
    """How many of ``epochs`` fit in ``budget_s`` when ``done`` epochs took ``spent_s`` and the
    rest take ``epoch_s`` each (never fewer than those done, nor than one).

    ``cost(epoch, n)``: the time of ``epoch`` (from 0) relative to ``epoch_s`` in a run of ``n``
    epochs, for runs whose epochs differ (progressive resizing); 1 by default.
    """
    if epoch_s <= 0:
        return epochs
    for n in range(epochs, done, -1):
        rest = range(done, n)
        if spent_s + epoch_s * sum(cost(e, n) if cost else 1.0 for e in rest) <= budget_s:
            return max(n, 1)
    return max(done, 1)


def _step_epochs(config: TrainConfig, epochs: int) -> int:
    """StepLR's step size in a run of ``epochs``: ``step_size``, else a third of the run."""
    return config.step_size or max(1, math.ceil(epochs / 3))


# An epoch's time grows as the input side to this power (progressive resizing plans with it).
# Measured here: the training loop ran at 85, 68 and 53 img/s at 80, 96 and 112 px on one thread
# (powers of 1.3-1.5, not the pixels' 2: per-image and per-batch work does not shrink with the
# image); on two threads, planned at 16.6 s for an 80 px epoch, the 112 px epochs were priced at
# 27.5 s and took 27.2 s. A machine where time grows faster is caught by the mid-run guard.
SIZE_COST_EXPONENT = 1.5


def _time_ratio(size: int, measured_size: int) -> float:
    """An epoch's time at input ``size`` relative to one at ``measured_size``."""
    return (size / measured_size) ** SIZE_COST_EXPONENT


def _size_cost(
    config: TrainConfig, measured_size: int, *, eval_share: float = 0.0
) -> Callable[[int, int], float]:
    """``epochs_within``'s cost: an epoch's time relative to the training part of one at
    ``measured_size``, plus ``eval_share`` of it in the epochs that run a val pass."""

    def cost(epoch: int, n: int) -> float:
        ratio = _time_ratio(config.input_size(epoch, _step_epochs(config, n)), measured_size)
        return ratio * (1.0 + eval_share) if _evaluates(config, epoch, n) else ratio

    return cost


def _evaluates(config: TrainConfig, epoch: int, epochs: int) -> bool:
    """Whether ``epoch`` (from 0) of a run of ``epochs`` ends with batch-norm re-estimation and a
    val pass: the first, every ``val_every``-th and the last."""
    return epoch == 0 or epoch + 1 == epochs or (epoch + 1) % config.val_every == 0


def _eval_share(history: Sequence[Mapping]) -> float:
    """The last val pass's time relative to its epoch's training (0 before any is recorded)."""
    for record in reversed(history):
        if "val_auc" in record and record.get("eval_seconds"):
            trained = record["seconds"] - record["eval_seconds"]
            return record["eval_seconds"] / trained if trained > 0 else 0.0
    return 0.0


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def _epoch_order(labels: np.ndarray, *, balance: bool, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    if not balance:
        return torch.randperm(n, generator=generator).numpy()
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    weights = 1.0 / counts[labels]
    return torch.multinomial(
        torch.from_numpy(weights), n, replacement=True, generator=generator
    ).numpy()


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    # Batch norm cannot train on a single image; dropping one sample per epoch is harmless.
    return [c for c in chunks if len(c) > 1]


class _Batcher:
    """Turns index batches into (images, metadata, labels) tensors, optionally in threads."""

    def __init__(self, samples: Sequence[Sample], meta: np.ndarray, config: TrainConfig) -> None:
        self.samples = samples
        self.meta = torch.from_numpy(meta)
        self.labels = torch.tensor([int(s.label) for s in samples])
        groups = [diagnosis_group(s.diagnosis) for s in samples]
        self.groups = torch.tensor(groups, dtype=torch.long)
        self.size = config.image_size
        self.colour_constancy = config.colour_constancy
        self.augment = (
            PhoneCaptureAugment(strength=config.augment_strength) if config.augment else None
        )
        self.num_workers = config.num_workers

    def _image(self, index: int, rng: random.Random | None) -> torch.Tensor:
        image = self.samples[index].load()
        if rng is not None and self.augment is not None:
            # Augment near the network's resolution: cheaper, and blur/JPEG artefacts then have the
            # scale they will have in the input. 1.4x leaves room for the random crop.
            work = round(self.size * 1.4)
            if min(image.size) > work:
                scale = work / min(image.size)
                small = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(small, Image.Resampling.BILINEAR, reducing_gap=2.0)
            image = self.augment(image, rng)
        return to_tensor(image, size=self.size, colour_constancy_method=self.colour_constancy)

    def make(self, indices: np.ndarray, seed: str | None) -> tuple[torch.Tensor, ...]:
        # One RNG per position in the epoch: results do not depend on thread scheduling.
        rngs = [None if seed is None else random.Random(f"{seed}:{p}") for p in range(len(indices))]
        images = torch.stack([self._image(int(i), r) for i, r in zip(indices, rngs, strict=True)])
        idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return images, self.meta[idx], self.labels[idx], self.groups[idx]

    def iterate(self, batches: list[np.ndarray], seed: str | None) -> Iterator[tuple]:
        keys = [None if seed is None else f"{seed}:{b}" for b in range(len(batches))]
        if self.num_workers == 0:
            yield from (self.make(b, k) for b, k in zip(batches, keys, strict=True))
            return
        with ThreadPoolExecutor(self.num_workers) as pool:
            # Bounded look-ahead: enough to keep the model fed without holding an epoch in memory.
            pending: deque = deque()
            for batch, key in zip(batches, keys, strict=True):
                pending.append(pool.submit(self.make, batch, key))
                if len(pending) > 2 * self.num_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def _recalibrate_batch_norm(
    model: nn.Module, batcher: _Batcher, order: np.ndarray, device, *, images: int, batch_size: int
) -> None:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or images <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for batch, meta, *_ in batcher.iterate(_batches(order[:images], batch_size), None):
            model(batch.to(device, memory_format=torch.channels_last), meta.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def _adopt_average(model, means, batcher, labels, config: TrainConfig, device) -> None:
    """Copy averaged weights ``means`` into ``model`` and re-estimate its batch-norm statistics."""
    with torch.no_grad():
        for param, mean in zip(model.parameters(), means, strict=True):
            param.copy_(mean)
    order = _epoch_order(labels, balance=config.balance, seed=config.seed)
    _recalibrate_batch_norm(
        model,
        batcher,
        order,
        device,
        images=max(2 * config.bn_recalibration_images, 4 * config.batch_size),
        batch_size=config.batch_size,
    )


def _val_logits(
    model: nn.Module, batcher: _Batcher, device, *, batch_size: int, flips: bool = False
) -> np.ndarray:
    model.eval()
    order = np.arange(len(batcher.samples))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    out = []
    with torch.inference_mode():
        for images, meta, *_ in batcher.iterate(chunks, None):
            images = images.to(device, memory_format=torch.channels_last)
            out.append(forward_views(model, images, meta.to(device), flips=flips).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def _auc(labels: np.ndarray, logits: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, logits[:, 1] - logits[:, 0]))


def _check_resumable(saved: Mapping, config: TrainConfig) -> None:
    current = json.loads(json.dumps(asdict(config)))  # as saved: tuples are lists
    # A blob saved before a field existed ran with that field's default, or as _BEFORE_THE_FIELD.
    defaults = json.loads(json.dumps(asdict(TrainConfig(arch=config.arch))))
    saved = {**defaults, **_BEFORE_THE_FIELD, **saved}
    changed = {k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k]}
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in sorted(changed))
        raise ValueError(f"cannot resume with a different training config ({diffs})")


def _softmax1(logits: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    z = logits / temperature
    return 1.0 / (1.0 + np.exp(-(z[:, 1] - z[:, 0] + bias)))


def fit(
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    config: TrainConfig,
    on_epoch: Callable[[EpochState], Any] | None = None,
    resume: bytes | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``train``, reporting progress (and val AUC, see ``val_every``)
    after each epoch.

    Returns the final model (eval mode, on the training device), its card (ready for
    ``dump_checkpoint``: preprocessing, temperature and logit bias fitted on ``val``, val metrics,
    config, history, data sizes, speed) and the per-epoch history.

    ``should_stop`` is asked before each epoch and after each training batch; when it answers
    true, ``fit`` raises ``TrainingStopped`` (a worker shutting down uses it to hand the run back
    without waiting for the epoch to end).
    """
    if len(train) < 2:
        raise ValueError(f"need at least 2 training samples, got {len(train)}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(config.arch).to(device, memory_format=torch.channels_last)
    train_groups = np.array([diagnosis_group(s.diagnosis) for s in train])
    aux_head = None
    if config.aux_diagnosis_weight > 0 and (train_groups >= 0).any():
        aux_head = nn.Linear(TRUNK_FEATURES, len(DIAGNOSIS_GROUPS)).to(device)
    # What the optimiser updates and a resume blob holds: the network, plus the auxiliary head.
    trained = model if aux_head is None else _WithAuxHead(model, aux_head)
    optimizer = torch.optim.AdamW(
        trained.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_epochs, gamma=config.step_gamma
    )
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    epochs = config.epochs  # fewer if the first epochs show they do not fit config.time_budget_s
    averaged = None
    if config.weight_average == "ema":
        averaged = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=_ema_average(config.ema_decay), use_buffers=False
        )
    elif config.weight_average == "swa" and config.lr_step_epochs > 1:  # else: the last epoch
        averaged = torch.optim.swa_utils.AveragedModel(model, use_buffers=False)
    history: list[dict] = []
    start = 0
    if resume is not None:
        extra = restore_train_state(
            resume,
            model=trained,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            average=averaged,
        )
        _check_resumable(extra["config"], config)
        start, history = int(extra["epoch"]), list(extra["history"])
        epochs = min(epochs, int(extra.get("epochs_planned", epochs)))

    train_labels = np.array([int(s.label) for s in train], dtype=np.int64)
    val_labels = np.array([int(s.label) for s in val], dtype=np.int64)
    for name, labels in (("train", train_labels), ("val", val_labels)):
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(
                f"{name} labels must be 0 (benign) or 1 (malignant), got {set(labels)}"
            )
    train_batcher = _Batcher(train, encode_metadata([s.metadata for s in train]), config)
    val_batcher = _Batcher(val, encode_metadata([s.metadata for s in val]), config)
    val_logits = np.zeros((0, 2), np.float32)

    last_pack: Callable[[], bytes] | None = None  # the state after the last epoch run here

    def check_stop(epoch: int, *, between_epochs: bool = False) -> None:
        if should_stop is not None and should_stop():
            raise TrainingStopped(epoch, last_pack if between_epochs else None)

    for epoch in range(start, config.epochs):
        if epoch >= epochs:
            break
        check_stop(epoch, between_epochs=True)
        size = config.input_size(epoch, scheduler.step_size)
        if config.time_budget_s is not None and epoch >= 2 and history:
            # Planned on the first two epochs; a machine that slows down later still stops in
            # time: when the next epoch, at the last one's pace, would end past the budget.
            spent = sum(h["seconds"] for h in history)
            last = history[-1]
            trained_s = last["seconds"] - last.get("eval_seconds", 0.0)
            growth = _time_ratio(size, last.get("image_size", config.image_size))
            share = _eval_share(history) if _evaluates(config, epoch, epochs) else 0.0
            if spent + trained_s * growth * (1.0 + share) > config.time_budget_s:
                break
        train_batcher.size = val_batcher.size = size
        seed = _epoch_seed(config.seed, epoch)
        torch.manual_seed(seed)  # dropout
        batches = _batches(
            _epoch_order(train_labels, balance=config.balance, seed=seed), config.batch_size
        )
        model.train()
        began = time.perf_counter()
        total_loss, seen = 0.0, 0
        for images, meta, labels, groups in train_batcher.iterate(batches, str(seed)):
            images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
            meta, labels = meta.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                if aux_head is None:
                    logits = model(images, meta)
                else:
                    logits, features = model(images, meta, with_features=True)
                    aux_logits = aux_head(features)
            loss = focal_loss(logits, labels, alpha=config.focal_alpha, gamma=config.focal_gamma)
            if aux_head is not None and bool((groups >= 0).any()):
                aux = nn.functional.cross_entropy(
                    aux_logits.float(), groups.to(device, non_blocking=True), ignore_index=-1
                )
                loss = loss + config.aux_diagnosis_weight * aux
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if averaged is not None and config.weight_average == "ema":
                averaged.update_parameters(model)
            total_loss += float(loss.detach()) * len(labels)
            seen += len(labels)
            check_stop(epoch)
        train_seconds = time.perf_counter() - began
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        evaluated = _evaluates(config, epoch, epochs)
        if evaluated:
            _recalibrate_batch_norm(
                model,
                train_batcher,
                np.concatenate(batches),
                device,
                images=config.bn_recalibration_images,
                batch_size=config.batch_size,
            )
            val_logits = _val_logits(model, val_batcher, device, batch_size=config.batch_size)
        swa_window = epochs - scheduler.step_size  # epochs before StepLR's last phase
        if averaged is not None and config.weight_average == "swa" and epoch >= swa_window:
            averaged.update_parameters(model)
        seconds = time.perf_counter() - began
        record = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(seen, 1),
            **({"val_auc": _auc(val_labels, val_logits)} if evaluated else {}),
            "lr": lr,
            "image_size": size,
            "seconds": seconds,
            "eval_seconds": seconds - train_seconds,  # batch-norm re-estimation + val pass
            "images_per_second": seen / train_seconds if train_seconds > 0 else float("nan"),
        }
        if epoch < 2 and config.time_budget_s is not None:
            # Plan after the first epoch and again after the second: the first pays one-off costs
            # (kernel selection, allocator, page cache), so alone it makes the run look slower.
            spent = sum(h["seconds"] for h in history) + seconds
            epochs = epochs_within(
                config.time_budget_s,
                train_seconds,
                config.epochs,
                done=epoch + 1,
                spent_s=spent,
                cost=_size_cost(config, size, eval_share=_eval_share([*history, record])),
            )
            scheduler.step_size = _step_epochs(config, epochs)  # the schedule keeps its shape
        history.append(record)
        extra = {"epoch": epoch + 1, "history": list(history), "config": asdict(config)}
        if epochs < config.epochs:  # shortened to the time budget: a resumed run keeps that
            extra["epochs_planned"] = epochs

        def pack(extra=extra) -> bytes:
            return pack_train_state(
                model=trained,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                extra=extra,
                average=averaged,
            )

        last_pack = pack
        if on_epoch is not None:
            state = {
                **record,
                "val_auc": record.get("val_auc", math.nan),
                "epochs": epochs,
                "history": list(history),
            }
            del state["eval_seconds"]
            on_epoch(EpochState(**state, _pack=pack))

    averaged_updates = int(averaged.n_averaged) if averaged is not None else 0
    train_batcher.size = val_batcher.size = config.image_size  # what the Predictor will see
    # A run stopped by the budget before its last phase trained at a smaller size.
    last_size = history[-1].get("image_size", config.image_size) if history else config.image_size
    resized = last_size != config.image_size
    # The budget can stop a run after an epoch without a val pass: its batch-norm statistics
    # are the training's running averages, and the val logits are an earlier epoch's.
    unevaluated = not history or "val_auc" not in history[-1]
    if averaged_updates > 1:
        _adopt_average(
            model, averaged.module.parameters(), train_batcher, train_labels, config, device
        )
    elif resized or unevaluated:
        _recalibrate_batch_norm(
            model,
            train_batcher,
            _epoch_order(train_labels, balance=config.balance, seed=config.seed),
            device,
            images=config.bn_recalibration_images,
            batch_size=config.batch_size,
        )
    model.eval()
    if (
        averaged_updates > 1
        or config.test_time_flips
        or resized
        or unevaluated
        or not len(val_logits)
    ):
        # The saved weights' val logits, computed as the Predictor will score (flips or not).
        val_logits = _val_logits(
            model,
            val_batcher,
            device,
            batch_size=config.batch_size,
            flips=config.test_time_flips,
        )
    calibration = fit_calibration(val_logits, val_labels)  # (1.0, 0.0) without val labels
    card = _card(config, history, train_labels, val_labels, val_logits, calibration, device)
    # Epochs (SWA) or optimiser steps (EMA) in the saved average; 0 = the last step's weights.
    card["averaged_updates"] = averaged_updates if averaged_updates > 1 else 0
    card["epochs_run"] = len(history)
    return TrainResult(model, card, history)


def _card(config, history, train_labels, val_labels, val_logits, calibration, device) -> dict:
    speeds = [h["images_per_second"] for h in history if math.isfinite(h["images_per_second"])]
    temperature, bias = calibration
    metrics = (
        evaluate(val_labels, _softmax1(val_logits, temperature, bias)) if len(val_labels) else {}
    )
    return {
        "arch": config.arch,
        "num_classes": 2,
        "image_size": config.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "classes": list(CLASSES),
        "colour_constancy": config.colour_constancy,
        "test_time_flips": config.test_time_flips,
        "metadata_dim": METADATA_DIM if config.arch == "resnet10_multimodal" else 0,
        "temperature": temperature,
        "logit_bias": bias,
        "config": asdict(config),
        "history": history,
        "data": {
            "n_train": int(len(train_labels)),
            "n_train_pos": int(train_labels.sum()),
            "n_val": int(len(val_labels)),
            "n_val_pos": int(val_labels.sum()),
        },
        "val_metrics": metrics,
        "images_per_second": float(np.mean(speeds)) if speeds else float("nan"),
        "device": device.type,
    }

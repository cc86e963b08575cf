"""One training run against the store: manifest -> samples -> fit -> evaluate -> register.

Celery-free so it can be driven by the task, a benchmark or a notebook with a store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import curation
import models
from curation.splits import split_group_keys
from workers import registry
from workers.settings import PROMOTION_METRICS
from workers.store import ObjectMissing, Store, UnknownId

__all__ = ["load_manifest", "latest_version", "make_samples", "run_training", "evaluate_model"]

log = logging.getLogger(__name__)

META_FIELDS = ("age_approx", "sex", "anatom_site_general")
# Bootstrap draws for each test subset's AUC interval (about a second for all three on 400 images).
AUC_CI_DRAWS = 1000


def latest_version(store: Store) -> str | None:
    return store.read_pointer("curated/LATEST")


def load_manifest(store: Store, version: str | None = None) -> tuple[str, pd.DataFrame]:
    version = version or latest_version(store)
    if not version:
        raise ValueError("no curated version yet; run `birthmark curate run` first")
    try:
        data = store.get(f"curated/{version}/manifest.parquet")
    except ObjectMissing:
        raise UnknownId(
            f"unknown curated version {version!r}; see `birthmark curate versions`"
        ) from None
    return version, curation.manifest_from_parquet(data)


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for f in META_FIELDS:
        v = row.get(f)
        out[f] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
    return out


def trainable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows a model may learn from or be judged on: included and labelled."""
    return df[df["included"].astype(bool) & df["malignant"].notna()]


def make_samples(df: pd.DataFrame, cache: models.DecodedImageCache) -> list[models.Sample]:
    return [
        models.Sample(
            partial(cache.load, rec["key"]),
            int(rec["malignant"]),
            _metadata(rec),
            None,
            rec.get("diagnosis"),
        )
        for rec in df.to_dict("records")
    ]


def is_phone_like(df: pd.DataFrame) -> pd.Series:
    return df["verdict"].eq("accepted")


def evaluate_model(
    predictor: models.Predictor,
    df: pd.DataFrame,
    cache: models.DecodedImageCache,
    *,
    ci_draws: int = AUC_CI_DRAWS,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics on ``df`` overall, on its phone-like subset and on the rest (dermoscopic and other
    archive images), each AUC with a ``ci_draws`` bootstrap interval (0: none); returns
    (metrics, probabilities)."""
    if df.empty:
        empty = models.evaluate([], [])
        return {"overall": empty, "phone_like": empty, "not_phone_like": empty}, np.array([])
    images = [cache.load(k) for k in df["key"]]
    meta = [_metadata(r) for r in df.to_dict("records")]
    prob = predictor.predict(images, meta)
    y = df["malignant"].astype(int).to_numpy()
    phone = is_phone_like(df).to_numpy()
    groups = split_group_keys(df).to_numpy()  # the intervals resample what the split kept together

    def metrics(mask: np.ndarray) -> dict[str, Any]:
        return models.evaluate(y[mask], prob[mask], groups=groups[mask], ci_draws=ci_draws)

    return {
        "overall": metrics(np.ones(len(df), dtype=bool)),
        "phone_like": metrics(phone),
        "not_phone_like": metrics(~phone),
    }, prob


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def holdout_id(test: pd.DataFrame) -> dict[str, Any]:
    """Which images a model was judged on: their count and a SHA-256 of their sorted isic_ids, so
    a reader can check that two cards (or a card and a decision) name the same holdout."""
    ids = sorted(map(str, test["isic_id"]))
    return {"rows": len(ids), "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def _cache_size(image_size: int) -> int:
    """Decoded images for a network of input ``image_size``: twice that (at least 128 px), so the
    random crops of training and the resize to the input size both downscale."""
    return max(image_size * 2, 128)


def _image_cache(root: Path, store: Store, image_size: int) -> models.DecodedImageCache:
    return models.DecodedImageCache(root, partial(store.get), size=_cache_size(image_size))


def _run_key(run_id: str) -> str:
    return f"models/runs/{run_id}/run.json"


def _resume_key(run_id: str) -> str:
    return f"models/runs/{run_id}/resume.bin"


def discard_checkpoint(store: Store, run_id: str) -> None:
    """Delete a finished run's resume checkpoint (~80 MB; only a run not yet done needs it)."""
    store.delete(_resume_key(run_id))


def _pinned_version(store: Store, run_id: str, requested: str | None) -> str | None:
    """The curated version an earlier attempt of run ``run_id`` trained on, None for a first one.

    A redelivered run resumes from its checkpoint; with ``data`` unset it would otherwise read
    LATEST again and, after a curation in between, continue on another data set (and record that
    version alone in the card). ``run_training`` writes the version it resolved to
    ``models/runs/<run_id>/run.json`` before training; later attempts train on it.
    """
    if not store.exists(_run_key(run_id)):
        return None
    pinned = json.loads(store.get(_run_key(run_id)))["data_version"]
    if requested and requested != pinned:
        raise ValueError(f"run {run_id} trains on curated version {pinned}, not {requested}")
    return pinned


def run_training(
    store: Store,
    run_id: str,
    *,
    config: models.TrainConfig,
    cache_dir: Path,
    data_version: str | None = None,
    promotion_metric: str = "roc_auc",
    promotion_margin: float = 0.0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_interval_s: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train on a curated version; returns the run's outcome.

    The resume checkpoint (model, optimiser and average: ~80 MB for the default net) is written
    after the first epoch, the last, and any epoch ending ``checkpoint_interval_s`` or more after
    the previous write (0 = every epoch): a killed run loses at most that much training.
    ``should_stop`` is passed to ``models.fit``, which raises ``models.TrainingStopped`` when it
    answers true; stopped between two epochs, the last one is checkpointed whatever the interval.
    """
    if promotion_metric not in PROMOTION_METRICS:  # before hours of training, not after
        raise ValueError(
            f"promotion metric {promotion_metric!r}: choose one of {', '.join(PROMOTION_METRICS)}"
        )
    pinned = _pinned_version(store, run_id, data_version)
    version, manifest = load_manifest(store, pinned or data_version)
    if pinned is None:
        store.put(_run_key(run_id), json.dumps({"data_version": version}).encode())
    data = trainable(manifest)
    splits = {s: data[data["split"] == s] for s in ("train", "val", "test")}
    if splits["train"].empty or splits["val"].empty:
        raise ValueError(
            f"curated version {version} has {len(splits['train'])} train and {len(splits['val'])} "
            "val rows with labels; need both"
        )
    cache = _image_cache(cache_dir, store, config.image_size)
    resume_key = _resume_key(run_id)
    resume = store.get(resume_key) if store.exists(resume_key) else None
    if resume is not None:
        log.info("run %s resumes from its last checkpoint", run_id)

    last_write = -math.inf

    def on_epoch(state: models.EpochState) -> None:
        nonlocal last_write
        due = time.monotonic() - last_write >= checkpoint_interval_s
        if due or state.epoch in (1, state.epochs):
            store.put(resume_key, state.resume_blob())
            last_write = time.monotonic()
        if on_progress:
            remaining = state.epochs - state.epoch
            # Not every epoch runs a val pass (TrainConfig.val_every): report the latest.
            checked = next((h for h in reversed(state.history) if "val_auc" in h), None)
            auc = math.nan if checked is None else float(checked["val_auc"])
            on_progress(
                {
                    "epoch": state.epoch,
                    "epochs": state.epochs,
                    "train_loss": round(float(state.train_loss), 5),
                    "val_auc": None if math.isnan(auc) else round(auc, 4),
                    "val_epoch": None if checked is None else checked["epoch"],
                    "images_per_second": round(float(state.images_per_second), 1),
                    "eta_s": round(state.seconds * remaining, 1),
                }
            )

    try:
        result = models.fit(
            make_samples(splits["train"], cache),
            make_samples(splits["val"], cache),
            config=config,
            on_epoch=on_epoch,
            resume=resume,
            should_stop=should_stop,
        )
    except models.TrainingStopped as stopped:
        if stopped.resume_blob is not None:  # between epochs: keep the last one, due or not
            store.put(resume_key, stopped.resume_blob())
        raise
    predictor = models.Predictor(result.model, result.card, device=config.device)
    metrics, prob = evaluate_model(predictor, splits["test"], cache)
    test = splits["test"]
    card = {
        **result.card,
        "run_id": run_id,
        "data_version": version,
        "data_counts": {s: int(len(d)) for s, d in splits.items()},
        "holdout": holdout_id(test),
        "licences": sorted(map(str, data["copyright_license"].dropna().unique())),
        "metrics": metrics,
        "code_version": _code_version(),
        "train_config": asdict(config),
    }
    report = models.render_report(
        metrics=metrics["overall"],
        y_true=test["malignant"].astype(int).to_numpy(),
        prob=prob,
        history=result.history,
        title=f"birthmark run {run_id} on {version}",
    )
    weights, card = models.dump_checkpoint(result.model, card)
    model_id = registry.publish_model(store, weights, card, report_html=report)
    decision = decide_promotion(
        store,
        model_id,
        metrics,
        test,
        cache,
        prob=prob,
        metric=promotion_metric,
        margin=promotion_margin,
        device=config.device,
    )
    store.put(f"models/{model_id}/decision.json", json.dumps(decision, indent=2).encode())
    return {"model_id": model_id, "data_version": version, "metrics": metrics, **decision}


def should_promote(
    new: float, old: float, *, metric: str, margin: float, champion: str
) -> tuple[bool, str]:
    """Whether a challenger scoring ``new`` replaces a champion scoring ``old`` (same holdout)."""
    if math.isnan(new):
        return False, f"{metric} undefined on the holdout; champion {champion} kept"
    if math.isnan(old) or new > old + margin:
        return (
            True,
            f"{metric} {new:.4f} beats champion {champion} ({old:.4f}) by more than {margin}",
        )
    return False, f"{metric} {new:.4f} does not beat champion {champion} ({old:.4f}) by {margin}"


def _unseen_by(store: Store, card: dict[str, Any], test: pd.DataFrame) -> np.ndarray:
    """Which ``test`` rows the champion (``card``) never learnt from: none of its image, patient
    or lesion is in the train or val split of the curated version it was trained on.

    Splits are by group hash, so on the same or a later version this is every row, unless a
    lesion was since linked to a patient or dedupe kept another copy of an image. A champion
    whose version is unknown or gone is judged on every row.
    """
    everything = np.ones(len(test), dtype=bool)
    version = card.get("data_version")
    if not version:
        return everything
    try:
        _, manifest = load_manifest(store, version)
    except ValueError:
        return everything
    learnt = trainable(manifest)
    learnt = learnt[learnt["split"].isin(["train", "val"])]
    seen = test["isic_id"].isin(set(learnt["isic_id"].dropna()))
    for column in ("patient_id", "lesion_id"):
        if column in test.columns and column in learnt.columns:
            seen |= test[column].isin(set(learnt[column].dropna()))
    return ~seen.to_numpy()


def decide_promotion(
    store: Store,
    model_id: str,
    metrics: dict[str, Any],
    test: pd.DataFrame,
    cache: models.DecodedImageCache,
    *,
    prob: np.ndarray,
    metric: str,
    margin: float,
    device: str = "auto",
) -> dict[str, Any]:
    """Promote ``model_id`` if it beats the champion on the same holdout by ``margin``.

    The decision also records a paired bootstrap of the AUC difference (``prob`` is the new
    model's test probabilities): how sure the holdout is about the ranking, for the person
    reading it; the rule itself stays the metric and margin.
    """
    champion = registry.champion_id(store)
    new = metrics["overall"].get(metric, float("nan"))
    if champion is None:
        registry.promote(store, model_id, reason="first model")
        return {"promoted": True, "reason": "first model", "champion_before": None}
    if champion == model_id:
        # Same data, seed and code give bit-identical weights: nothing to decide.
        return {
            "promoted": False,
            "reason": "identical to the champion",
            "champion_before": champion,
        }
    card = registry.read_card(store, champion)
    fresh = _unseen_by(store, card, test)
    note = ""
    if not fresh.all():
        # Both are judged on the rows the champion never learnt from (a lesion linked to a
        # patient since, another near-duplicate kept): elsewhere it would be marked on its own
        # training images.
        note = (
            f"; judged on the {int(fresh.sum())} of {len(test)} test rows the champion did not "
            "train on"
        )
        test, prob = test[fresh], prob[fresh]
        new = models.evaluate(test["malignant"].astype(int).to_numpy(), prob).get(metric, math.nan)
    net = models.load_checkpoint(registry.read_weights(store, champion), card)
    # The champion sees the images as it would score them: decoded for its own input size (a
    # 256 px champion must not score a 64 px challenger's 128 px cache entries upscaled), on the
    # challenger's device. Its own intervals are not needed: the paired bootstrap compares the two.
    champion_size = int(card.get("image_size", 224))
    if _cache_size(champion_size) > cache.size:
        cache = _image_cache(cache.root, store, champion_size)
    predictor = models.Predictor(net, card, device=device)
    old_metrics, old_prob = evaluate_model(predictor, test, cache, ci_draws=0)
    old = old_metrics["overall"].get(metric, float("nan"))
    promoted, reason = should_promote(new, old, metric=metric, margin=margin, champion=champion)
    reason += note
    paired = models.paired_auc_difference(
        test["malignant"].astype(int).to_numpy(),
        prob,
        old_prob,
        groups=split_group_keys(test).to_numpy(),
        draws=AUC_CI_DRAWS,
    )
    if not math.isnan(paired["difference"]):
        low, high = paired["ci"]
        reason += (
            f"; AUC difference {paired['difference']:+.4f} (95% paired bootstrap "
            f"{low:+.4f} to {high:+.4f}; higher in {paired['share_better']:.0%} of resamples)"
        )
    now = registry.champion_id(store)
    if promoted and now != champion:
        # Promoted or rolled back by hand while this run judged the champion it read: the
        # challenger was never compared with the model it would replace.
        promoted = False
        reason += f"; not promoted: the champion changed to {now} during the comparison"
    if promoted:
        registry.promote(store, model_id, reason=reason)
    return {
        "promoted": promoted,
        "reason": reason,
        "champion_before": champion,
        "champion_metric": old,
        "paired_auc": paired,
        "holdout": holdout_id(test),  # the rows both models were judged on
    }

"""Tasks on the ``train`` queue: a training run (one at a time) and the schedules that start it."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import models
from workers import jobs
from workers.app import app
from workers.runtime import redis_client, store
from workers.settings import get_settings
from workers.shutdown import hand_back_on_shutdown, stop_requested
from workers.store import StoreUnavailable
from workers.submit import submit_task_job
from workers.tasks._base import TRANSIENT, JobTask
from workers.training_run import discard_checkpoint, latest_version, load_manifest, run_training

log = logging.getLogger(__name__)

_settings = get_settings()
LOCK = "train"


def train_config(params: dict[str, Any]) -> models.TrainConfig:
    s = get_settings()
    config = models.TrainConfig()
    overrides = {
        "arch": params.get("arch") or s.train_arch,
        "epochs": params.get("epochs") or s.train_epochs,
        "image_size": params.get("image_size") or s.train_image_size,
        "test_time_flips": s.train_test_time_flips,
        "progressive_scales": s.train_progressive_scales,
        "val_every": s.train_val_every,
        "device": s.device,
        "time_budget_s": s.train_time_budget_min * 60,
    }
    for key in ("batch_size", "lr", "seed", "augment", "balance", "test_time_flips"):
        if params.get(key) is not None:
            overrides[key] = params[key]
    return replace(config, **overrides)


@app.task(
    name="train.run",
    base=JobTask,
    time_limit=_settings.train_time_limit_s,
    autoretry_for=TRANSIENT,
    retry_backoff=5,
    retry_backoff_max=120,
    max_retries=5,
)
def run(job_id: str) -> dict[str, Any]:
    """Train, evaluate, register; resumes from the last epoch checkpoint when redelivered.

    A worker told to shut down stops the run after the training batch under way, checkpointing
    first if an epoch has just ended, and puts the message back on the queue.
    """
    s = get_settings()
    r, st = redis_client(), store()
    job = jobs.get_job(r, job_id)
    if job is None:
        raise ValueError(f"unknown job {job_id}")
    if job["status"] == "done":  # redelivered after it finished (the ack was lost): not again
        return job.get("result") or {}
    if not jobs.acquire_lock(r, LOCK, job_id, ttl_s=s.train_time_limit_s):
        holder = r.get(f"birthmark:lock:{LOCK}")
        jobs.update_job(
            r, job_id, status="skipped", message=f"training run {holder} is in progress"
        )
        return {"skipped": True, "running": holder}
    try:
        # message="": a run handed back at a shutdown said so there; running again, it is stale
        jobs.update_job(r, job_id, status="running", message="")
        models.set_threads(None)  # every CPU the worker may use, a container's CPU limit included

        def progress(p: dict[str, Any]) -> None:
            jobs.refresh_lock(r, LOCK, job_id, ttl_s=s.train_time_limit_s)
            jobs.update_job(r, job_id, progress=p, done=p["epoch"], total=p["epochs"])

        with hand_back_on_shutdown(r, job_id):  # models.TrainingStopped
            outcome = run_training(
                st,
                job_id,
                config=train_config(job["params"]),
                cache_dir=s.home / "cache" / "decoded",
                data_version=job["params"].get("data"),
                promotion_metric=s.promotion_metric,
                promotion_margin=s.promotion_margin,
                on_progress=progress,
                checkpoint_interval_s=s.train_checkpoint_interval_s,
                should_stop=stop_requested,
            )
        jobs.update_job(r, job_id, status="done", result=outcome, message="")
        try:  # after "done": a redelivery from here on finds the job done, not a fresh start
            discard_checkpoint(st, job_id)
        except (StoreUnavailable, OSError) as err:
            log.warning("run %s: resume checkpoint left in the store: %s", job_id, err)
        return outcome
    except ValueError as err:
        jobs.update_job(r, job_id, status="failed", message=str(err))
        raise
    finally:
        jobs.release_lock(r, LOCK, job_id)


@app.task(name="train.scheduled")
def scheduled() -> str:
    """The weekly retrain (beat). Two fires in the same minute queue one run."""
    slot = time.strftime("%Y%m%d%H%M", time.gmtime())
    job_id, _ = submit_task_job(
        run, kind="train", params={"trigger": "schedule"}, idempotency_key=f"train-schedule-{slot}"
    )
    return job_id


@app.task(name="train.check_growth", autoretry_for=TRANSIENT, max_retries=3)
def check_growth() -> str | None:
    """Retrain when LATEST has grown by the configured fraction since the champion's data."""
    from workers import registry

    s = get_settings()
    st = store()
    latest = latest_version(st)
    champion = registry.champion_id(st)
    if latest is None or champion is None:
        return None
    trained_on = registry.read_card(st, champion).get("data_version")
    if trained_on == latest:
        return None
    _, new = load_manifest(st, latest)
    _, old = load_manifest(st, trained_on) if trained_on else (None, new.iloc[:0])
    if len(new) < len(old) * (1 + s.train_growth_fraction) or len(new) == len(old):
        return None
    # Once per curated version: this check runs hourly, and until a run on ``latest`` is promoted
    # (a challenger that loses never is) the champion's data stays behind LATEST.
    job_id, _ = submit_task_job(
        run,
        kind="train",
        params={"trigger": "growth", "data": latest},
        idempotency_key=f"train-growth-{latest}",
    )
    return job_id

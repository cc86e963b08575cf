"""Tasks on the ``curation`` queue: isic-cli pulls, publishing versions, the daily schedule."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

import curation as curation_lib
from workers import jobs
from workers.app import app
from workers.curating import publish_version
from workers.isolated_decode import DecoderHung
from workers.pulls import run_isic_pull
from workers.runs import counted_run
from workers.runtime import redis_client, store
from workers.settings import Settings, get_settings
from workers.shutdown import check_stop, hand_back_on_shutdown, stop_requested
from workers.submit import submit_task_job
from workers.tasks._base import TRANSIENT, JobTask

log = logging.getLogger(__name__)
_settings = get_settings()
_RETRY = {
    "autoretry_for": (*TRANSIENT, DecoderHung),
    "retry_backoff": 5,
    "retry_backoff_max": 120,
    "max_retries": 5,
}


def phone_thresholds(s: Settings) -> curation_lib.PhoneThresholds | None:
    overrides = {
        k: v for k, v in (("accept", s.phone_accept), ("reject", s.phone_reject)) if v is not None
    }
    return curation_lib.PhoneThresholds(**overrides) if overrides else None


def _progress(r: redis.Redis, job_id: str, stage: str):
    def report(done: int, total: int) -> None:
        check_stop()  # a safe point: nothing is published before the last image
        jobs.update_job(r, job_id, done=done, total=total, progress={"stage": stage})

    return report


def _pull(r: redis.Redis, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    s = get_settings()
    jobs.update_job(  # message="": a hand-back at a shutdown said so there; now it is stale
        r, job_id, status="running", message="", progress={"stage": "isic-cli download"}
    )
    return run_isic_pull(
        store(),
        job_id,
        search=params.get("search", ""),
        limit=int(params.get("limit", s.curation_limit)),
        collections=params.get("collections"),
        api_url=s.isic_api_url,
        timeout=s.isic_timeout_s,
        on_image=_progress(r, job_id, "upload"),
        should_stop=stop_requested,
    )


def _publish(r: redis.Redis, job_id: str, pulls: list[str] | None) -> dict[str, Any]:
    s = get_settings()
    jobs.update_job(r, job_id, status="running", message="", progress={"stage": "phone-likeness"})
    with counted_run(r, job_id, "publish", label=f"curation {job_id}") as isolate:
        return publish_version(
            store(),
            pull_ids=pulls,
            thresholds=phone_thresholds(s),
            allowed_licences=s.allowed_licence_list,
            max_distance=s.duplicate_max_distance,
            max_pixels=s.max_image_pixels,
            on_progress=_progress(r, job_id, "phone-likeness"),
            isolate_decoding=isolate,
            hang_s=s.curation_decode_hang_s,
        )


@app.task(name="curation.pull", base=JobTask, time_limit=_settings.curation_time_limit_s, **_RETRY)
def pull(job_id: str) -> dict[str, Any]:
    """Run isic-cli for the job's query and store the pull under raw/isic/<job_id>/."""
    r = redis_client()
    with hand_back_on_shutdown(r, job_id):
        record = _pull(r, job_id, jobs.get_job(r, job_id)["params"])
    jobs.update_job(r, job_id, status="done", result=record)
    return record


@app.task(name="curation.run", base=JobTask, time_limit=_settings.curation_time_limit_s, **_RETRY)
def run(job_id: str) -> dict[str, Any]:
    """Score, dedupe, split and publish a curated version from the job's pulls (default: all)."""
    r = redis_client()
    with hand_back_on_shutdown(r, job_id):
        summary = _publish(r, job_id, jobs.get_job(r, job_id)["params"].get("pulls") or None)
    jobs.update_job(r, job_id, status="done", result=summary)
    return summary


@app.task(name="curation.scheduled")
def scheduled() -> str:
    """Daily: pull the configured query, then publish a new version (a chain of two jobs)."""
    s = get_settings()
    slot = time.strftime("%Y%m%d%H%M", time.gmtime())
    params = {
        "search": s.curation_query,
        "limit": s.curation_limit,
        "collections": s.curation_collections,
    }
    job_id, _ = submit_task_job(
        pull_then_publish, kind="curation-daily", params=params, idempotency_key=f"curation-{slot}"
    )
    return job_id


@app.task(
    name="curation.pull_then_publish",
    base=JobTask,
    time_limit=_settings.curation_time_limit_s,
    **_RETRY,
)
def pull_then_publish(job_id: str) -> dict[str, Any]:
    """The daily job: a pull, then a version over every pull; done only when both are."""
    r = redis_client()
    with hand_back_on_shutdown(r, job_id):
        record = _pull(r, job_id, jobs.get_job(r, job_id)["params"])
        summary = _publish(r, job_id, None)
    result = {"pull_id": record["pull_id"], "pull_counts": record["counts"], **summary}
    jobs.update_job(r, job_id, status="done", result=result)
    return result

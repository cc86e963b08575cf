"""Tasks on the ``score`` queue: plan a job, score batches, finalize, watch the uploads prefix."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from celery import group

import models
from workers import jobs, registry, sweeper
from workers.app import app
from workers.results import (
    merge_summaries,
    read_rows,
    summarize_rows,
    write_part,
    write_summary,
)
from workers.runs import counted_run
from workers.runtime import redis_client, store
from workers.scoring import DecoderHung, Item, ScoringModel, load_scoring_model, score_batch
from workers.settings import get_settings
from workers.submit import lookup_metadata, request_key
from workers.tasks._base import TRANSIENT, JobTask
from workers.watcher import watch_prefix

log = logging.getLogger(__name__)

_settings = get_settings()
_RETRY = {
    # A hung decoder too: the retry decodes in child processes (see workers.runs).
    "autoretry_for": (*TRANSIENT, DecoderHung),
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 12,
}

_loaded: dict[str, ScoringModel] = {}
_loading = threading.Lock()


def current_model() -> ScoringModel | None:
    """The champion, loaded once per process; a new champion is picked up between batches."""
    st = store()
    model_id = registry.champion_id(st)
    if model_id is None:
        return None
    with _loading:
        return _load(st, model_id)


def _load(st, model_id: str) -> ScoringModel:
    if model_id not in _loaded:
        settings = get_settings()
        if not _loaded:
            models.set_threads(settings.score_torch_thread_count)
            if settings.score_gil_switch_ms:
                sys.setswitchinterval(settings.score_gil_switch_ms / 1000)
        _loaded.clear()
        _loaded[model_id] = load_scoring_model(
            st,
            model_id,
            device=settings.device,
            threshold=settings.score_threshold,
            compile=settings.compile_model,
            torchscript=settings.score_torchscript,
        )
        traced = _loaded[model_id].predictor.traced is not None
        log.info("scoring with model %s (%s)", model_id, "TorchScript" if traced else "eager")
    return _loaded[model_id]


@app.task(name="score.plan", base=JobTask, time_limit=_settings.score_time_limit_s, **_RETRY)
def plan(job_id: str) -> int:
    """List the job's inputs, mark duplicates, split into batches and queue them."""
    settings = get_settings()
    st, r = store(), redis_client()
    plan_key = sweeper.plan_key(job_id)
    if st.exists(plan_key):  # redelivered: reuse the same batches
        batches = json.loads(st.get(plan_key))
    else:
        request = json.loads(st.get(request_key(job_id)))
        items = [Item.from_dict(d) for d in request["items"]]
        metadata = request.get("metadata") or {}
        for p in request["prefixes"]:
            for obj in st.list(p["prefix"]):
                display = p.get("display") or p["prefix"]
                meta = lookup_metadata(metadata, obj.key) if metadata else None
                items.append(Item(obj.key, display + obj.key[len(p["prefix"]) :], meta))
        seen: dict[str, str] = {}
        planned = []
        for it in items:
            if it.key in seen:
                it = Item(it.key, it.source, it.metadata, duplicate_of=seen[it.key])
            else:
                seen[it.key] = it.source
            planned.append(it.to_dict())
        size = settings.score_batch_size
        batches = [planned[i : i + size] for i in range(0, len(planned), size)]
        st.put(plan_key, json.dumps(batches, ensure_ascii=False).encode())
    total = sum(len(b) for b in batches)
    # A redelivered or resumed plan keeps the first start: the summary's seconds and images per
    # second are the job's, not the last plan run's.
    started = (jobs.get_job(r, job_id) or {}).get("started_at") or time.time()
    jobs.update_job(
        r, job_id, status="running", total=total, batches=len(batches), started_at=started
    )
    if not batches:
        finalize_job(job_id)
        return 0
    done = jobs.done_batches(r, job_id)
    todo = [(i, b) for i, b in enumerate(batches) if i not in done]
    if not todo:  # resumed after every part was written: only the summary is missing
        finalize_job(job_id)
    elif len(batches) == 1:
        # One batch: score it here. Two queue hops (batch, finalize) would cost more than the
        # scoring for the common one-upload job; a retry redoes it idempotently.
        score_and_record(job_id, 0, batches[0])
    else:
        # Ids name the batch, so the sweeper can tell a queued batch from a lost one.
        group(batch.s(job_id, i, b).set(task_id=sweeper.batch_task_id(job_id, i)) for i, b in todo
              ).apply_async()  # fmt: skip
    return len(batches)


@app.task(name="score.batch", base=JobTask, time_limit=_settings.score_time_limit_s, **_RETRY)
def batch(job_id: str, index: int, items: list[dict[str, Any]]) -> int:
    """Score one batch and write its part file; the last batch to finish finalizes the job."""
    return score_and_record(job_id, index, items)


@app.task(name="score.finalize", base=JobTask, time_limit=_settings.score_time_limit_s, **_RETRY)
def finalize(job_id: str) -> dict[str, Any]:
    """Write ``summary.json`` from the part files and mark the job done (idempotent)."""
    return finalize_job(job_id)


def score_and_record(job_id: str, index: int, items: list[dict[str, Any]]) -> int:
    """The body of ``score.batch``; also run inline by ``plan`` for one-batch jobs."""
    settings = get_settings()
    st, r = store(), redis_client()
    with counted_run(r, job_id, f"batch:{index}", label=f"batch {job_id}/{index}") as isolate:
        rows = score_batch(
            st,
            [Item.from_dict(d) for d in items],
            model=current_model,
            allowed_prefixes=settings.score_prefix_list,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            threads=settings.score_prefetch_threads,
            fetch_nice=settings.score_fetch_nice,
            isolate_decoding=isolate,
            hang_s=settings.score_decode_hang_s,
        )
    for row in rows:
        row["batch"] = index
    write_part(st, job_id, index, rows)
    n_done = jobs.complete_batch(r, job_id, index, summarize_rows(rows))
    job = jobs.get_job(r, job_id)
    if job and n_done >= job["batches"]:
        # Inline rather than queued: finalize is idempotent, and a queue hop is pure latency.
        finalize_job(job_id)
    return len(rows)


def finalize_job(job_id: str) -> dict[str, Any]:
    """The body of ``score.finalize``: the batches' summaries kept in Redis, merged.

    No part is read back, except where a summary is missing (a part recorded by an older worker,
    or Redis lost it): then the parts are read.
    """
    st, r = store(), redis_client()
    job = jobs.get_job(r, job_id) or {}
    kept = jobs.batch_summaries(r, job_id)
    expected = set(range(int(job.get("batches") or 0)))
    if expected and set(kept) == expected:
        counts = merge_summaries(kept.values())
    else:
        counts = summarize_rows(list(read_rows(st, job_id)))
    started = float(job.get("started_at") or job.get("created_at") or time.time())
    seconds = max(time.time() - started, 1e-9)
    summary = {
        "job_id": job_id,
        **counts,
        "seconds": round(seconds, 3),
        "images_per_second": round(counts["total"] / seconds, 2),
        "finished_at": time.time(),
    }
    write_summary(st, job_id, summary)
    jobs.update_job(r, job_id, status="done", result=summary, finished_at=summary["finished_at"])
    return summary


@app.task(name="score.watch", time_limit=300, **_RETRY)
def watch(prefix: str | None = None) -> str | None:
    """Score objects that appeared under the uploads prefix since the stored cursor, once each."""
    return watch_prefix(prefix if prefix is not None else get_settings().watch_prefix)

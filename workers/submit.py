"""Submitting jobs: write the request, create the record, queue the first task.

Used by the CLI, the upload watcher and tests alike; idempotent by job id or idempotency key.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from workers import jobs, sweeper
from workers.app import app
from workers.runtime import redis_client, store

__all__ = [
    "CLI_UPLOADS",
    "lookup_metadata",
    "queue_plan",
    "request_key",
    "send_by_name",
    "submit_scoring",
    "submit_task_job",
]

# Where `birthmark score` uploads local files (``<CLI_UPLOADS><job_id>/...``): each already belongs
# to the job it was uploaded for, so the upload watcher leaves this prefix alone.
CLI_UPLOADS = "uploads/cli/"


def request_key(job_id: str) -> str:
    return f"results/{job_id}/request.json"


def lookup_metadata(metadata: Mapping[str, Mapping], name: str) -> Mapping | None:
    """The metadata row for file ``name`` (a path or key): by file name, else by its stem."""
    base = posixpath.basename(name)
    return metadata.get(base) or metadata.get(posixpath.splitext(base)[0])


def submit_scoring(
    *,
    items: Sequence[dict[str, Any]] = (),
    prefixes: Sequence[dict[str, str]] = (),
    job_id: str | None = None,
    idempotency_key: str | None = None,
    kind: str = "score",
    metadata: Mapping[str, Mapping] | None = None,
) -> tuple[str, bool]:
    """Queue a scoring job over ``items`` ({key, source, metadata}) and/or store ``prefixes``
    ({prefix, display}). Returns ``(job_id, created)``; an existing job is not queued again.

    ``metadata`` (rows by file name, :func:`lookup_metadata`) is for the objects the plan lists
    under ``prefixes``; ``items`` carry their own."""
    r = redis_client()
    params = {"prefixes": list(prefixes), "n_items": len(items)}
    job_id, created = jobs.create_job(
        r, kind=kind, params=params, job_id=job_id, idempotency_key=idempotency_key
    )
    if created or not store().exists(request_key(job_id)):
        body: dict[str, Any] = {"items": list(items), "prefixes": list(prefixes)}
        if metadata and prefixes:
            body["metadata"] = dict(metadata)
        store().put(request_key(job_id), json.dumps(body, ensure_ascii=False).encode())
    if jobs.claim_enqueue(r, job_id):  # also repairs a job whose submitter died before queueing
        queue_plan(job_id)
    return job_id, created


def send_by_name(name: str, args: tuple, task_id: str) -> None:
    """Queue task ``name`` (routed as ``apply_async`` would) without importing its module: a
    client or the sweep need not import the workers' task modules (torch)."""
    # ignore_result: apply_async takes it from the task; by name, the backend would subscribe
    # to a result nobody reads.
    app.send_task(name, args, task_id=task_id, ignore_result=True)


def queue_plan(job_id: str) -> None:
    """Queue ``score.plan`` for ``job_id`` under the id the sweeper looks for."""
    send_by_name("score.plan", (job_id,), sweeper.plan_task_id(job_id))


def submit_task_job(
    task,
    *,
    kind: str,
    params: dict[str, Any],
    job_id: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[str, bool]:
    """Create a job record for a single task (train, curation) and queue it with the job id."""
    r = redis_client()
    job_id, created = jobs.create_job(
        r,
        kind=kind,
        params=params,
        job_id=job_id,
        idempotency_key=idempotency_key,
        task=task.name,
    )
    if jobs.claim_enqueue(r, job_id):  # also repairs a job whose submitter died before queueing
        task.apply_async((job_id,), task_id=sweeper.run_task_id(job_id))
    return job_id, created

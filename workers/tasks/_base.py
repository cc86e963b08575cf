"""The base class of job tasks: a task that fails for good marks its job failed, with the reason."""

from __future__ import annotations

import logging

import redis
from celery import Task

from workers import jobs
from workers.runtime import redis_client
from workers.store import StoreUnavailable

log = logging.getLogger(__name__)

# Failures worth retrying with backoff: the store or the broker is briefly unreachable.
TRANSIENT = (StoreUnavailable, redis.ConnectionError, redis.TimeoutError)


class JobTask(Task):
    """For tasks whose first argument is a job id."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: D401 - Celery hook
        job_id = args[0] if args else kwargs.get("job_id")
        if not isinstance(job_id, str):
            return
        message = f"{type(exc).__name__}: {exc}"[:2000]
        try:
            jobs.update_job(redis_client(), job_id, status="failed", message=message)
        except OSError:
            log.warning("could not mark job %s failed", job_id)

"""A worker's shutdown as its long tasks see it.

Celery's warm shutdown (SIGTERM: ``services down``, ``docker compose stop``) waits for running
tasks to end. A training run or a curation job can take hours, so the process manager kills the
worker first: the task's message, unacknowledged, waits for the sweep to find the worker dead
(:mod:`workers.holders`, minutes) or for the visibility timeout (7 h). Instead a long task asks
``stop_requested()`` at safe points, stops there, and ``hand_back_on_shutdown`` puts its message
back on its queue for the next worker at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from celery.exceptions import Reject
from celery.signals import worker_shutting_down

from workers import jobs

__all__ = ["ShuttingDown", "check_stop", "hand_back_on_shutdown", "stop_requested"]

log = logging.getLogger(__name__)
_requested = threading.Event()


class ShuttingDown(Exception):
    """Raised at a task's safe point once its worker has begun to shut down."""


@worker_shutting_down.connect
def _on_shutting_down(**_: object) -> None:
    # Sent in the worker's main process, from its SIGTERM/SIGINT/SIGQUIT handler.
    _requested.set()


def stop_requested() -> bool:
    """True once this worker process has begun to shut down."""
    return _requested.is_set()


def check_stop() -> None:
    """A safe point: raise ``ShuttingDown`` if the worker is shutting down."""
    if stop_requested():
        raise ShuttingDown("the worker is shutting down")


@contextmanager
def hand_back_on_shutdown(r: redis.Redis, job_id: str) -> Iterator[None]:
    """Run a job's work; an error raised once the worker is shutting down (its own safe point, or
    a child process killed with the worker's group) does not fail the job: the job goes back to
    ``queued`` and the message back on its queue (``Reject(requeue=True)``: kombu queues it again
    as a new message would be, behind any already waiting).
    """
    try:
        yield
    except Exception as err:
        if not stop_requested():
            raise
        message = f"worker shut down ({type(err).__name__}: {err}); queued again"
        log.warning("job %s: %s", job_id, message)
        jobs.update_job(r, job_id, status="queued", message=message)
        raise Reject(message, requeue=True) from err

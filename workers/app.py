"""The Celery application, built from the one settings object. Tasks live in workers/tasks/."""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab
from celery.signals import worker_init
from kombu import Queue

from workers.runtime import redis_url
from workers.settings import get_settings

__all__ = ["app", "QUEUES", "QUEUE_OF_KIND", "consumers"]

QUEUES = ("curation", "train", "score")
# The queue that runs a job's tasks, by the job record's kind (workers.jobs.create_job).
QUEUE_OF_KIND = {
    "score": "score",
    "watch": "score",
    "train": "train",
    "pull": "curation",
    "curate": "curation",
    "curation-daily": "curation",
}


def _crontab(expr: str) -> crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = expr.split()
    return crontab(minute, hour, day_of_week, day_of_month, month_of_year)


class _Config:
    """Read lazily by Celery on first use, so importing the app starts nothing."""

    @property
    def broker_url(self) -> str:
        return redis_url()

    @property
    def result_backend(self) -> str:
        return redis_url()

    @property
    def broker_transport_options(self) -> dict:
        return {
            # Longer than the longest task, or Redis redelivers a running task to a second worker.
            "visibility_timeout": get_settings().visibility_timeout_s,
            # Look for messages of dead workers (unacknowledged past the visibility timeout) every
            # unacked_restore_interval (10 s): kombu 5.7 otherwise scans only every 10th time.
            "unacked_restore_throttle": 1,
        }

    @property
    def result_expires(self) -> int:
        return get_settings().result_expires_s

    @property
    def beat_schedule(self) -> dict:
        # The sweep is not here: every worker sweeps in turn (workers.tasks.sweep).
        s = get_settings()
        return {
            # A pass still queued when the next is due is dropped: behind a backlog of scoring
            # batches, passes would pile up and then run (and list the prefix) back to back.
            "score-watch-uploads": {
                "task": "score.watch",
                "schedule": s.watch_interval_s,
                "options": {"expires": s.watch_interval_s},
            },
            "curation-daily-pull": {
                "task": "curation.scheduled",
                "schedule": _crontab(s.curation_cron),
            },
            "train-weekly": {"task": "train.scheduled", "schedule": _crontab(s.train_cron)},
            "train-on-growth": {"task": "train.check_growth", "schedule": 3600.0},
        }

    # JSON only: a pickled message is refused by kombu and never executed.
    task_serializer = "json"
    result_serializer = "json"
    event_serializer = "json"
    accept_content = ["json"]
    result_accept_content = ["json"]

    task_acks_late = True
    task_reject_on_worker_lost = True
    worker_prefetch_multiplier = 1
    task_ignore_result = True
    task_track_started = True
    broker_connection_retry_on_startup = True
    worker_hijack_root_logger = False
    worker_send_task_events = True
    task_send_sent_event = True
    timezone = "UTC"
    # Beat writes its schedule file when it wakes and 180 s (celery.beat.Scheduler.sync_every,
    # fixed) have passed since the last write; capping its sleep (celery: 300 s) bounds the
    # gap between writes to ~240 s, which the compose healthcheck's 5-minute window relies on.
    beat_max_loop_interval = 60

    task_queues = [Queue(q) for q in QUEUES]
    task_default_queue = "score"
    task_routes = {
        "score.*": {"queue": "score"},
        "train.*": {"queue": "train"},
        "curation.*": {"queue": "curation"},
    }


app = Celery(
    "birthmark",
    include=[
        "workers.tasks.score",
        "workers.tasks.train",
        "workers.tasks.curation",
        "workers.tasks.sweep",
    ],
)
app.config_from_object(_Config())

from workers import holders  # noqa: E402, F401  (signal handlers: alive keys, task holders)


@worker_init.connect
def _load_libraries(**_: object) -> None:
    """``models`` and ``curation`` load their submodules on first use, which spares every CLI
    command torch and scikit-learn (~6 s); a worker loads them all as it starts instead, so its
    first task is not the one that pays."""
    import curation
    import models

    for package in (models, curation):
        for name in package.__all__:
            getattr(package, name)


def consumers(queue: str, *, timeout: float = 1.0) -> list[str]:
    """The workers (by name) consuming ``queue`` that answer a broadcast within ``timeout`` s.

    A solo-pool worker (training) in the middle of a task cannot answer, so an empty list means
    "none running or all busy", not "none running".
    """
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return sorted(name for name, qs in replies.items() if any(q.get("name") == queue for q in qs))

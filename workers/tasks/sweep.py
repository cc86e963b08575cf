"""The ``jobs.sweep`` task: queue again the work of any job that the broker lost.

See :mod:`workers.sweeper` for how lost work is told from queued work. Beat runs the sweep every
``BIRTHMARK_SWEEP_INTERVAL_S`` on the score queue (its workers are the ones always up);
``birthmark jobs sweep`` runs it in the foreground.
"""

from __future__ import annotations

import logging
import time

from workers import jobs, sweeper
from workers.app import QUEUES, app
from workers.holders import holder_key
from workers.runtime import redis_client, store
from workers.settings import get_settings
from workers.tasks.score import batch, finalize, queue_plan

log = logging.getLogger(__name__)


@app.task(name="jobs.sweep", time_limit=300)
def sweep() -> list[str] | None:
    """One sweep (beat); None when the previous one is still looking."""
    r, owner = redis_client(), f"sweep-{time.time()}"
    if not jobs.acquire_lock(r, "sweep", owner, ttl_s=300):
        return None
    try:
        handed_back = [f"{o.task_id}: from {o.worker}" for o in restore_orphans()]
        return handed_back + [lost.describe() for lost in requeue_lost()]
    finally:
        jobs.release_lock(r, "sweep", owner)


def restore_orphans(*, confirm_s: float = 5.0) -> list[sweeper.Orphan]:
    """Put the messages held by dead workers (``sweeper.find_orphans``) back on their queues, at
    the end consumers take from next, with kombu's own restore (the one the visibility timeout
    runs): one transaction per message, which does nothing if the message was acknowledged.

    A worker only cut off from Redis for ``BIRTHMARK_WORKER_ALIVE_TTL_S`` is taken for dead: its
    task then runs twice, which every task here tolerates (a batch overwrites its part; a
    training run resumes from the same checkpoint under the same lock owner).
    """
    r = redis_client()
    found = sweeper.find_orphans(r, confirm_s=confirm_s)
    if not found:
        return []
    with app.connection_for_write() as conn:
        qos = conn.default_channel.qos
        for orphan in found:
            log.warning(
                "%s was held by %s, which is gone: queued again", orphan.task_id, orphan.worker
            )
            qos.restore_by_tag(orphan.tag)
            r.delete(holder_key(orphan.task_id))
    return found


def requeue_lost(*, min_age_s: float | None = None, confirm_s: float = 5.0) -> list[sweeper.Lost]:
    """Find lost work (a job's task, or a scoring job's plan, batches or finalize) and queue each
    once more, under the same task id. ``min_age_s`` defaults to BIRTHMARK_SWEEP_MIN_AGE_S.

    Running a batch twice is harmless (its part is overwritten, its counters bump once) and a
    lost message never started its task, so a rare false find costs a duplicate run, not a row.
    """
    if min_age_s is None:
        min_age_s = get_settings().sweep_min_age_s
    found = sweeper.find_lost(
        redis_client(), store(), queues=QUEUES, min_age_s=min_age_s, confirm_s=confirm_s
    )
    for lost in found:
        log.warning("lost in the broker, queued again: %s", lost.describe())
        if lost.task:
            app.send_task(lost.task, (lost.job_id,), task_id=sweeper.run_task_id(lost.job_id))
        if lost.plan:
            queue_plan(lost.job_id)
        for index, items in lost.batches.items():
            batch.apply_async(
                (lost.job_id, index, items), task_id=sweeper.batch_task_id(lost.job_id, index)
            )
        if lost.finalize:
            finalize.apply_async((lost.job_id,), task_id=sweeper.finalize_task_id(lost.job_id))
    return found

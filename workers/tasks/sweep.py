"""The ``jobs.sweep`` task: queue again the work of any job that the broker lost.

See :mod:`workers.sweeper` for how lost work is told from queued work. Beat runs the sweep every
``BIRTHMARK_SWEEP_INTERVAL_S`` on the score queue (its workers are the ones always up);
``birthmark jobs sweep`` runs it in the foreground.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from workers import jobs, sweeper
from workers.app import QUEUES, app
from workers.holders import alive_key, holder_key
from workers.runtime import redis_client, store
from workers.settings import get_settings
from workers.submit import queue_plan
from workers.tasks.score import batch, finalize

log = logging.getLogger(__name__)


@app.task(name="jobs.sweep", time_limit=300)
def sweep() -> list[str] | None:
    """One sweep (beat); None when another one is still looking."""
    swept = sweep_now()
    if swept is None:
        return None
    orphans, lost = swept
    return [f"{o.task_id}: from {o.worker}" for o in orphans] + [x.describe() for x in lost]


def sweep_now(
    *, min_age_s: float | None = None, confirm_s: float = 5.0
) -> tuple[list[sweeper.Orphan], list[sweeper.Lost]] | None:
    """Queue again what dead workers held, then what the broker lost; None (nothing done) while
    another sweep holds the ``sweep`` lock: two at once could each restore one message."""
    r, owner = redis_client(), f"sweep-{uuid.uuid4().hex}"
    if not jobs.acquire_lock(r, "sweep", owner, ttl_s=300):
        return None
    try:
        orphans = restore_orphans(confirm_s=confirm_s)
        return orphans, requeue_lost(min_age_s=min_age_s, confirm_s=confirm_s)
    finally:
        jobs.release_lock(r, "sweep", owner)


def _restore(channel: Any, orphan: sweeper.Orphan) -> bool:
    """Put ``orphan``'s message back at the end of its queue that consumers take from next, as
    kombu's own restore does, in one transaction that first checks again that the message is
    still held by the same worker and that worker is still gone (False: nothing done). The
    message gets a new delivery tag: if its worker was only cut off and acknowledges late, that
    acknowledgement removes nothing the next holder's copy needs."""

    def restore(pipe: Any) -> bool:
        raw = pipe.hget(channel.unacked_key, orphan.tag)
        holder = pipe.get(holder_key(orphan.tag))
        if raw is None or holder is None or bytes_to_str(holder) != orphan.worker:
            return False
        if pipe.exists(alive_key(orphan.worker)):
            return False
        message, exchange, routing_key = loads(bytes_to_str(raw))
        message["properties"]["delivery_tag"] = uuid.uuid4().hex
        pipe.multi()
        channel.qos._remove_from_indices(orphan.tag, pipe)
        channel._do_restore_message(message, exchange, routing_key, pipe, leftmost=False)
        pipe.delete(holder_key(orphan.tag))
        return True

    watched = (channel.unacked_key, holder_key(orphan.tag), alive_key(orphan.worker))
    with channel.conn_or_acquire() as client:
        return client.transaction(restore, *watched, value_from_callable=True)


def restore_orphans(*, confirm_s: float = 5.0) -> list[sweeper.Orphan]:
    """Put the messages held by dead workers (``sweeper.find_orphans``) back on their queues;
    returns those it put back. Run it under the ``sweep`` lock (``sweep_now``).

    A worker only cut off from Redis for ``BIRTHMARK_WORKER_ALIVE_TTL_S`` is taken for dead: its
    task then runs twice, which the tasks here tolerate (a batch overwrites its part; a pull or
    a publish is idempotent; a training run resumes from the same checkpoint, though the first
    copy to end releases the training lock under the other).
    """
    found = sweeper.find_orphans(redis_client(), confirm_s=confirm_s)
    restored = []
    if not found:
        return restored
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for orphan in found:
            try:
                done = _restore(channel, orphan)
            except Exception:  # noqa: BLE001 - one message must not stop the sweep
                log.exception("could not queue %s again", orphan.task_id)
                continue
            if done:
                log.warning(
                    "%s was held by %s, which is gone: queued again", orphan.task_id, orphan.worker
                )
                restored.append(orphan)
    return restored


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

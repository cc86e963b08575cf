"""The sweep: queue again the tasks of dead workers and the work that the broker lost.

See :mod:`workers.sweeper` for how lost work is told from queued work and :mod:`workers.holders`
for how a dead worker's tasks are found. Every worker sweeps in turn, from a thread of its own:
about every ``BIRTHMARK_SWEEP_INTERVAL_S`` one of them, whichever asks first once a Redis key
saying a sweep is done for this interval has expired (``_take_turn``). Being no task, the sweep
needs no free worker slot, no particular queue and no beat. ``birthmark jobs sweep`` runs one
in the foreground.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from workers import jobs, sweeper
from workers.app import QUEUES, app
from workers.holders import alive_key, holder_key
from workers.runtime import redis_client, store
from workers.settings import get_settings
from workers.submit import queue_plan, send_by_name

log = logging.getLogger(__name__)

# Set while a sweep of this interval is taken: it expires after the interval, and the first
# worker to ask after that sweeps.
TURN_KEY = "birthmark:sweep:turn"
_stop = threading.Event()


def _take_turn(r: Any, worker: str, interval_s: float) -> bool:
    """True when ``worker`` takes this interval's sweep (no other worker took it yet)."""
    return bool(r.set(TURN_KEY, worker, nx=True, px=max(1, int(interval_s * 1000))))


def _sweep_in_turn(worker: str, interval_s: float) -> None:
    """A worker's sweeping thread: asks about four times per interval (jittered, so workers
    started together do not ask together) whether the sweep is its turn, and sweeps if it is."""
    while True:
        try:
            if _take_turn(redis_client(), worker, interval_s):
                swept = sweep_now()
                if swept and any(swept):
                    log.info("sweep by %s: %d orphaned, %d lost", worker, *map(len, swept))
        except Exception:  # noqa: BLE001 - the next turn tries again
            log.exception("sweep by %s failed", worker)
        if _stop.wait(interval_s * random.uniform(0.2, 0.3)):
            return


@worker_ready.connect
def _start_sweeping(sender: Any = None, **_: Any) -> None:
    interval_s = get_settings().sweep_interval_s
    worker = getattr(sender, "hostname", None)
    if interval_s and worker:
        args = (worker, interval_s)
        threading.Thread(target=_sweep_in_turn, args=args, name="sweep", daemon=True).start()


@worker_shutdown.connect
def _stop_sweeping(**_: Any) -> None:
    _stop.set()


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
            send_by_name(lost.task, (lost.job_id,), sweeper.run_task_id(lost.job_id))
        if lost.plan:
            queue_plan(lost.job_id)
        for index, items in lost.batches.items():
            send_by_name(
                "score.batch",
                (lost.job_id, index, items),
                sweeper.batch_task_id(lost.job_id, index),
            )
        if lost.finalize:
            send_by_name("score.finalize", (lost.job_id,), sweeper.finalize_task_id(lost.job_id))
    return found

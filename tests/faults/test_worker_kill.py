"""Fault: a scoring worker is SIGKILLed mid-job.

The batches it was running (two: a score worker runs two at a time) stay unacknowledged in Redis
(``task_acks_late``); kombu's Redis transport puts them back on the queue once they are older than
the visibility timeout (a running worker checks every 10 s, and a starting worker checks at once).
Batches never started are still queued. A fresh worker therefore finishes the job; part files are
keyed by batch, so a batch that runs twice overwrites itself and the job has exactly one row per
input."""

from __future__ import annotations

import pytest

from tests.faults._support import (
    assert_one_row_per_input,
    freeze_when,
    part_count,
    upload_samples,
    wait_for,
    wait_job,
)
from tests.faults.conftest import base_env, bound
from tests.workers.helpers import publish_tiny_champion

pytestmark = pytest.mark.integration

N_INPUTS = 30
BATCH = 3


def test_sigkill_mid_batch_loses_and_duplicates_nothing(tmp_path, private_redis, workers):
    from workers import results
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring

    env = base_env(
        tmp_path,
        private_redis.url,
        BIRTHMARK_SCORE_BATCH_SIZE=str(BATCH),
        BIRTHMARK_VISIBILITY_TIMEOUT_S="4",
        BIRTHMARK_SCORE_PREFETCH_THREADS="1",
    )
    with bound(env):
        st = store()
        publish_tiny_champion(st)
        keys = upload_samples(st, "kill", N_INPUTS)
        first = workers.start(env)
        job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys])
        n_batches = N_INPUTS // BATCH
        r = redis_client()
        # Kill while batches run: 2 parts written and every task slot of the worker holding a
        # message taken but not acknowledged, checked with the worker stopped so that no batch
        # finishes before the kill. With a slot free the worker may be between taking a message
        # off the queue and recording it as unacknowledged (kombu does the two in separate steps),
        # and a SIGKILL there loses it: the sweep's case (test_lost_messages.py), not this one.
        slots = first.concurrency
        freeze_when(
            first,
            lambda: r.hlen("unacked") == slots and part_count(st, job_id) >= 2,
            timeout=60,
            what=f"{slots} batches in flight after 2 parts",
        )
        first.kill()  # SIGKILL to the whole (stopped) process group, mid-batch
        written = part_count(st, job_id)
        assert written < n_batches, "the job finished before the kill; make it slower"
        # The batches that were running are unacknowledged: only the visibility timeout brings
        # them back.
        assert r.hlen("unacked") == slots

        second = workers.start(env)
        job = wait_job(job_id, timeout=90)
        assert job["status"] == "done", job
        rows = list(results.read_rows(st, job_id))
        assert_one_row_per_input(rows, keys)
        assert all(r["status"] == "ok" for r in rows)
        assert part_count(st, job_id) == n_batches
        assert (job["done"], job["errors"]) == (N_INPUTS, 0)
        summary = results.read_summary(st, job_id)
        assert (summary["total"], summary["ok"]) == (N_INPUTS, N_INPUTS)
        # "done" is written before the last task returns and its message is acknowledged
        wait_for(lambda: r.hlen("unacked") == 0, timeout=30, what="every batch acknowledged")
        assert "score.batch" in second.output()


def test_sweep_hands_back_a_dead_workers_batches_long_before_the_visibility_timeout(
    tmp_path, private_redis, workers
):
    """The same kill with the visibility timeout at its 7 h default: the batches come back
    because the dead worker's alive key expired (``workers.holders``) and the sweep put the
    messages it held back on the queue (``restore_orphans``), not because kombu timed them out."""
    from workers import holders, results
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring
    from workers.tasks.sweep import restore_orphans

    env = base_env(
        tmp_path,
        private_redis.url,
        BIRTHMARK_SCORE_BATCH_SIZE=str(BATCH),
        BIRTHMARK_SCORE_PREFETCH_THREADS="1",
        BIRTHMARK_WORKER_ALIVE_TTL_S="3",
    )
    with bound(env):
        st, r = store(), redis_client()
        publish_tiny_champion(st)
        keys = upload_samples(st, "orphans", N_INPUTS)
        first = workers.start(env)
        job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys])
        slots = first.concurrency

        def recorded_holders() -> set[str | None]:
            return {r.get(holders.holder_key(tag)) for tag in r.hkeys("unacked")}

        # Taken messages get their holder a moment after kombu records them (task_received); a
        # kill inside that moment leaves one to the visibility timeout, which test_sigkill covers.
        freeze_when(
            first,
            lambda: (
                r.hlen("unacked") == slots
                and part_count(st, job_id) >= 2
                and None not in recorded_holders()
            ),
            timeout=60,
            what=f"{slots} batches in flight after 2 parts, their holder recorded",
        )
        held = recorded_holders()
        recorded_before_kill = set(held)
        assert len(held) == 1, held  # both recorded as the first worker's
        assert held.pop().startswith(first.name + "/")  # the name, and this incarnation's id
        assert restore_orphans(confirm_s=0.5) == []  # frozen, its key still alive: not orphans
        first.kill()
        # Restarted under the same name, as compose and `services up` restart a worker: its new
        # incarnation's alive key does not vouch for the dead one's tasks.
        second = workers.start(env, name=first.name)

        handed_back = []
        wait_for(
            lambda: handed_back.extend(restore_orphans(confirm_s=0.5)) or handed_back,
            timeout=30,
            what="the dead worker's batches handed back",
        )
        assert len(handed_back) == slots
        assert {o.worker for o in handed_back} == recorded_before_kill
        job = wait_job(job_id, timeout=90)
        assert job["status"] == "done", job
        assert_one_row_per_input(list(results.read_rows(st, job_id)), keys)
        assert part_count(st, job_id) == N_INPUTS // BATCH
        # "done" is written before the last task returns and its message is acknowledged
        wait_for(lambda: r.hlen("unacked") == 0, timeout=30, what="every batch acknowledged")
        assert restore_orphans(confirm_s=0) == []  # the live worker's key is kept alive
        assert "score.batch" in second.output()

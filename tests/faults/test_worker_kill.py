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
        assert r.hlen("unacked") == 0
        assert "score.batch" in second.output()

"""Fault: Redis (broker and job state) restarts mid-job; Redis loses its queues.

What happens, found by these tests:

- Redis restarts (append-only file on, down a few seconds): the job completes on its own. The
  worker's Celery consumer reconnects (``broker_connection_retry``); job bookkeeping calls
  (``workers.runtime.redis_client``) retry for about 30 s instead of failing, which matters because
  a failed task cannot retry either: Celery's retry publishes to the same, unreachable Redis and
  the message is then dropped (``Reject(requeue=False)``). The queue and the unacknowledged
  messages come back from the AOF.
- Redis loses its queued messages (a restart without persistence, an outage longer than the ~30 s
  the client rides out, a flush): the job record stays ``running`` with parts missing.
  ``birthmark jobs resume JOB`` completes it: parts already written are counted once, the plan
  re-queues only the batches without a part, and the job is finalized even when every part exists.
"""

from __future__ import annotations

import time

import pytest

from tests.faults._support import (
    assert_one_row_per_input,
    freeze_when,
    job_status,
    part_count,
    upload_samples,
    wait_for,
    wait_job,
)
from tests.faults.conftest import SERVICE_BATCH, bound

pytestmark = pytest.mark.integration

BATCH = SERVICE_BATCH


def test_redis_restart_mid_job_completes_on_its_own(scoring_service):
    from workers import results
    from workers.runtime import store
    from workers.submit import submit_scoring

    with bound(scoring_service.env):
        _restart_mid_job(scoring_service.redis, scoring_service.worker, store(), submit_scoring,
                         results)  # fmt: skip


def _restart_mid_job(server, worker, st, submit_scoring, results) -> None:
    from workers.runtime import redis_client

    r = redis_client()
    # Larger photos than the other tests': a batch takes long enough to be caught mid-task.
    keys = upload_samples(st, "restart", 48, size=(1600, 1200))
    job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys])
    # Stop while every task slot holds an unacknowledged message, the worker itself stopped so
    # that none finishes in between: with a slot free the worker may have a BRPOP in flight, and
    # a message popped as Redis goes down is lost (kombu records it as unacknowledged in a second
    # step; the sweep finds it, see test_lost_messages.py). This test is about the restart.
    slots = worker.concurrency
    freeze_when(
        worker,
        lambda: r.hlen("unacked") == slots and part_count(st, job_id) >= 1,
        timeout=60,
        what=f"a part and {slots} batches in flight",
    )
    try:
        server.stop()  # SIGTERM: redis-server fsyncs its AOF and exits
    finally:
        worker.thaw()  # it finds Redis gone and reconnects
    assert part_count(st, job_id) < len(keys) // BATCH, "job finished before the fault"
    time.sleep(3)
    server.start()  # same port and directory: the AOF is replayed
    job = wait_job(job_id, timeout=90)
    assert job["status"] == "done", job
    rows = list(results.read_rows(st, job_id))
    assert_one_row_per_input(rows, keys)
    assert all(r["status"] == "ok" for r in rows)
    assert (job["done"], job["errors"]) == (len(keys), 0)


def test_lost_queue_is_completed_by_jobs_resume(scoring_service):
    with bound(scoring_service.env):
        _lost_queue()


def _lost_queue() -> None:
    from typer.testing import CliRunner

    from workers import results
    from workers.cli import app as cli
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring

    st, r = store(), redis_client()
    keys = upload_samples(st, "lost", 36)
    job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys])
    wait_for(lambda: part_count(st, job_id) >= 1, timeout=60, interval=0.01, what="a part")
    r.delete("score")  # the queued batches are gone; the job record survives
    time.sleep(1.5)  # the batch in flight (if any) finishes
    written = part_count(st, job_id)
    assert written < len(keys) // BATCH
    assert job_status(job_id)["status"] == "running"

    out = CliRunner().invoke(cli, ["jobs", "resume", job_id])
    assert out.exit_code == 0, out.output
    assert f"{written} batches already written" in out.output
    job = wait_job(job_id, timeout=60)
    assert job["status"] == "done", job
    rows = list(results.read_rows(st, job_id))
    assert_one_row_per_input(rows, keys)
    assert (job["done"], job["errors"]) == (len(keys), 0)

    # Resuming a finished job again is harmless: same rows, same totals.
    assert CliRunner().invoke(cli, ["jobs", "resume", job_id]).exit_code == 0
    job = wait_job(job_id, timeout=30)
    assert_one_row_per_input(list(results.read_rows(st, job_id)), keys)
    assert job["done"] == len(keys)

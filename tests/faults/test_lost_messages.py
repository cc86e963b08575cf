"""Fault: the broker loses a job's message (kombu's BRPOP gap, a flushed queue).

``workers.sweeper`` decides "lost" from the broker, not from the job's idle time: a batch without
a part, or a job's one task, is lost only when no message for it waits in a queue or is held
unacknowledged, in two looks. Most tests take messages in and out of a real Redis by hand, with
no worker, so every case is exact; one loses a batch of a job that a real worker is running, and
the worker's own sweep finds it.
"""

from __future__ import annotations

import json
import threading

import pytest

from tests.faults._support import (
    assert_one_row_per_input,
    upload_samples,
    wait_for,
    wait_job,
)
from tests.faults.conftest import SERVICE_BATCH, base_env, bound
from workers.results import summarize_rows

pytestmark = pytest.mark.integration

QUEUE = "score"
_MISSING = {"status": "error", "error_kind": "missing"}  # a row as a batch writes it


def _messages(r, queue: str = QUEUE) -> dict[str, str]:
    """Queued messages by task id (raw, as kombu stored them)."""
    return {json.loads(m)["headers"]["id"]: m for m in r.lrange(queue, 0, -1)}


def _take(r, task_id: str, queue: str = QUEUE) -> str:
    raw = _messages(r, queue)[task_id]
    assert r.lrem(queue, 1, raw) == 1
    return raw


def _hold_unacked(r, raw: str, tag: str) -> None:
    """What kombu does when a worker takes a message: it is kept in the unacked hash."""
    r.hset("unacked", tag, json.dumps([json.loads(raw), "", QUEUE]))


@pytest.fixture
def idle_broker(tmp_path, private_redis):
    """A private Redis and a local store, bound in-process; no worker consumes anything."""
    env = base_env(tmp_path, private_redis.url, BIRTHMARK_SCORE_BATCH_SIZE="2")
    with bound(env):
        from workers.runtime import redis_client, store

        yield redis_client(), store()


def _planned_job(r, n_items: int = 6) -> str:
    """A job whose plan ran (as a worker would, here in process): its batches are queued."""
    from workers.submit import submit_scoring
    from workers.sweeper import plan_task_id
    from workers.tasks.score import plan

    job_id, _ = submit_scoring(items=[{"key": f"uploads/x/{i}.jpg"} for i in range(n_items)])
    _take(r, plan_task_id(job_id))  # a worker took the plan ...
    plan.run(job_id)  # ... and ran it
    return job_id


def _find(r, st, **kw):
    from workers.app import QUEUES
    from workers.sweeper import find_lost

    return find_lost(r, st, queues=QUEUES, min_age_s=0, confirm_s=0, **kw)


def test_queued_and_unacknowledged_batches_are_not_lost_a_missing_one_is(idle_broker):
    from typer.testing import CliRunner

    from workers.cli import app as cli
    from workers.sweeper import batch_task_id
    from workers.tasks.sweep import requeue_lost

    r, st = idle_broker
    job_id = _planned_job(r)
    assert sorted(_messages(r)) == [batch_task_id(job_id, i) for i in range(3)]
    assert _find(r, st) == []  # a backlog: all three wait in the queue

    _hold_unacked(r, _take(r, batch_task_id(job_id, 1)), "tag-1")
    assert _find(r, st) == []  # batch 1 is with a worker

    _take(r, batch_task_id(job_id, 2))  # popped, and the worker died before recording it
    (lost,) = _find(r, st)
    assert (lost.job_id, sorted(lost.batches)) == (job_id, [2])
    assert not lost.plan and not lost.finalize
    assert [it["key"] for it in lost.batches[2]] == ["uploads/x/4.jpg", "uploads/x/5.jpg"]

    out = CliRunner().invoke(cli, ["jobs", "sweep", "--confirm-s", "0", "--min-age-s", "0"])
    assert out.exit_code == 0, out.output
    assert f"queued again: {job_id}: batches [2]" in out.output
    assert batch_task_id(job_id, 2) in _messages(r)  # queued again, under the same id
    assert _find(r, st) == []
    assert requeue_lost(min_age_s=0, confirm_s=0) == []  # nothing queued twice


def test_sweep_queues_again_what_a_dead_worker_held_and_leaves_a_live_ones(idle_broker):
    from typer.testing import CliRunner

    from workers.cli import app as cli
    from workers.holders import alive_key, holder_key
    from workers.sweeper import batch_task_id

    r, st = idle_broker
    job_id = _planned_job(r)
    dead, live = batch_task_id(job_id, 0), batch_task_id(job_id, 1)
    _hold_unacked(r, _take(r, dead), "tag-dead")
    _hold_unacked(r, _take(r, live), "tag-live")
    r.set(holder_key("tag-dead"), "score@gone")  # its worker's alive key has expired
    r.set(holder_key("tag-live"), "score@here")
    r.set(alive_key("score@here"), "1", ex=60)

    argv = ["jobs", "sweep", "--confirm-s", "0", "--min-age-s", "0"]
    out = CliRunner().invoke(cli, argv, env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert f"queued again: {dead} (its worker score@gone is gone)" in out.output
    assert live not in out.output and "nothing lost" not in out.output
    assert set(r.hkeys("unacked")) == {"tag-live"}
    restored = json.loads(r.lindex(QUEUE, -1))  # the end consumers take from next
    assert restored["headers"]["id"] == dead
    assert restored["properties"]["delivery_tag"] != "tag-dead"  # a late ack cannot remove it
    assert not r.exists(holder_key("tag-dead"))  # the next worker records itself on receipt
    assert _find(r, st) == []  # nothing lost either: every batch queued or held


def test_jobs_sweep_waits_its_turn_behind_a_running_sweep(idle_broker):
    from typer.testing import CliRunner

    from workers import jobs
    from workers.cli import app as cli
    from workers.holders import holder_key
    from workers.sweeper import batch_task_id

    r, _ = idle_broker
    job_id = _planned_job(r)
    _hold_unacked(r, _take(r, batch_task_id(job_id, 0)), "tag-dead")
    r.set(holder_key("tag-dead"), "score@gone")
    assert jobs.acquire_lock(r, "sweep", "a worker's sweep", ttl_s=60)  # a worker sweeps now

    argv = ["jobs", "sweep", "--confirm-s", "0", "--min-age-s", "0"]
    out = CliRunner().invoke(cli, argv, env={"COLUMNS": "200"})
    assert out.exit_code == 1 and "another sweep is running" in out.output
    assert r.hkeys("unacked") == ["tag-dead"]  # left to the sweep that holds the lock

    jobs.release_lock(r, "sweep", "a worker's sweep")
    out = CliRunner().invoke(cli, argv, env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "its worker score@gone is gone" in out.output
    assert r.hlen("unacked") == 0


def test_a_plan_queued_by_name_is_the_message_apply_async_queues(idle_broker):
    """``queue_plan`` sends ``score.plan`` by name (a client need not import the scoring worker's
    modules): the same queue and id, and no result subscription (the task ignores results)."""
    from workers.submit import submit_scoring
    from workers.sweeper import plan_task_id

    r, _ = idle_broker
    job_id, _ = submit_scoring(items=[{"key": "uploads/x/a.jpg"}])
    headers = json.loads(_messages(r)[plan_task_id(job_id)])["headers"]
    assert (headers["task"], headers["ignore_result"]) == ("score.plan", True)
    assert not any(k.startswith("celery-task-meta") for k in r.pubsub_channels())


def test_a_message_seen_by_the_second_look_is_not_lost(idle_broker):
    """A message between BRPOP and the unacked record is in neither place for an instant."""
    from workers.sweeper import batch_task_id, find_lost

    r, st = idle_broker
    job_id = _planned_job(r, 4)
    raw = _take(r, batch_task_id(job_id, 0))
    looks = []

    def recorded_meanwhile(seconds: float) -> None:
        looks.append(seconds)
        _hold_unacked(r, raw, "tag-0")

    found = find_lost(r, st, queues=["score"], min_age_s=0, confirm_s=2.5, sleep=recorded_meanwhile)
    assert found == []
    assert looks == [2.5]


def test_a_lost_plan_or_finalize_is_found_and_new_jobs_are_left_alone(idle_broker):
    from workers import jobs
    from workers.submit import submit_scoring
    from workers.sweeper import batch_task_id, finalize_task_id, find_lost, plan_task_id
    from workers.tasks.sweep import requeue_lost

    r, st = idle_broker
    job_id, _ = submit_scoring(items=[{"key": "uploads/x/a.jpg"}, {"key": "uploads/x/b.jpg"}])
    assert _find(r, st) == []  # its plan waits in the queue
    _take(r, plan_task_id(job_id))
    assert find_lost(r, st, queues=["score"], min_age_s=60, confirm_s=0) == []  # too new
    (lost,) = _find(r, st)
    assert (lost.job_id, lost.plan) == (job_id, True)

    done_id = _planned_job(r, 4)
    for i in range(2):  # both parts written; the worker died before the summary
        _take(r, batch_task_id(done_id, i))
        jobs.complete_batch(r, done_id, i, summarize_rows([_MISSING, _MISSING]))
    found = {x.job_id: x for x in _find(r, st)}
    assert found[done_id].finalize and not found[done_id].batches

    requeue_lost(min_age_s=0, confirm_s=0)  # sent by name: the task and id the worker expects
    queued = {i: json.loads(m)["headers"]["task"] for i, m in _messages(r).items()}
    assert queued == {
        plan_task_id(job_id): "score.plan",
        finalize_task_id(done_id): "score.finalize",
    }

    jobs.update_job(r, done_id, status="done")
    assert done_id not in {x.job_id for x in _find(r, st)}  # finished jobs are never swept


def test_the_lost_message_of_a_one_task_job_is_queued_again(idle_broker):
    """Training and curation jobs are one task each: lost when its message is nowhere."""
    from workers import jobs
    from workers.submit import submit_task_job
    from workers.sweeper import run_task_id
    from workers.tasks.sweep import requeue_lost
    from workers.tasks.train import run as train_run

    r, st = idle_broker
    job_id, _ = submit_task_job(train_run, kind="train", params={"epochs": 1})
    assert list(_messages(r, "train")) == [run_task_id(job_id)]
    assert _find(r, st) == []  # waiting for the training worker
    raw = _take(r, run_task_id(job_id), "train")
    _hold_unacked(r, raw, "tag-train")
    assert _find(r, st) == []  # with the training worker
    r.hdel("unacked", "tag-train")  # ... which died before it recorded the message

    (lost,) = requeue_lost(min_age_s=0, confirm_s=0)
    assert (lost.job_id, lost.task, lost.describe()) == (
        job_id,
        "train.run",
        f"{job_id}: train.run",
    )
    assert list(_messages(r, "train")) == [run_task_id(job_id)]  # same task, same id, same queue
    assert _find(r, st) == []

    old_id, _ = jobs.create_job(r, kind="pull", params={})  # a record without a task name
    jobs.claim_enqueue(r, old_id)
    assert old_id not in {x.job_id for x in _find(r, st)}


def test_a_batch_lost_while_a_worker_runs_the_job_is_queued_again(tmp_path, private_redis, workers):
    """One batch message vanishes from the queue mid-job: nothing but a sweep could bring it
    back (it was never taken, so never unacknowledged). The worker sweeps on its own, with no
    beat and no command (every 2 s here), and the job ends with one row per input."""
    from tests.workers.helpers import publish_tiny_champion
    from workers import results
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring
    from workers.sweeper import batch_task_id
    from workers.tasks.sweep import requeue_lost

    env = base_env(
        tmp_path,
        private_redis.url,
        BIRTHMARK_SCORE_BATCH_SIZE=str(SERVICE_BATCH),
        BIRTHMARK_SWEEP_INTERVAL_S="2",
        BIRTHMARK_SWEEP_MIN_AGE_S="0",
    )
    with bound(env):
        st, r = store(), redis_client()
        publish_tiny_champion(st)
        n = 6 * SERVICE_BATCH
        # Large enough that the last batch is still queued when the test takes it.
        keys = upload_samples(st, "lost-one", n, size=(1600, 1200))
        worker = workers.start(env)
        job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys])
        last = batch_task_id(job_id, 5)
        raw = wait_for(lambda: _messages(r).get(last), timeout=60, interval=0.005,
                       what="the last batch queued")  # fmt: skip
        assert r.lrem(QUEUE, 1, raw) == 1

        job = wait_job(job_id, timeout=90)
        assert job["status"] == "done", job
        rows = list(results.read_rows(st, job_id))
        assert_one_row_per_input(rows, keys)
        assert (job["done"], job["errors"]) == (n, 0)
        logged = f"lost in the broker, queued again: {job_id}: batches [5]"
        assert logged in worker.output()
        # "done" is written before the last task returns and its message is acknowledged
        wait_for(lambda: r.hlen("unacked") == 0, timeout=30, what="every batch acknowledged")
        assert requeue_lost(min_age_s=0, confirm_s=0) == []


def test_the_sweep_is_no_beat_task_and_one_worker_takes_each_intervals_turn(idle_broker):
    """Every worker's sweeping thread asks for the turn; within one interval only the first
    gets it, and the next interval's turn is free again once the key expires."""
    from workers.app import app
    from workers.tasks.sweep import TURN_KEY, _take_turn

    assert not any("sweep" in name for name in app.conf.beat_schedule)
    r, _ = idle_broker
    assert _take_turn(r, "score@a", 0.5)
    assert not _take_turn(r, "train@b", 0.5) and not _take_turn(r, "score@a", 0.5)
    assert r.get(TURN_KEY) == "score@a"
    wait_for(lambda: _take_turn(r, "train@b", 0.5), timeout=5, what="the next interval's turn")
    assert r.get(TURN_KEY) == "train@b"


def test_holders_are_per_message_so_a_retry_keeps_its_own(idle_broker):
    """``task.retry()`` publishes the retry (same task id, new delivery tag) before the first
    run's ``task_postrun``; the threads pool may receive it first. Each message keeps its own
    holder, and a run forgets only its own message's, and only while it is still the holder."""
    from types import SimpleNamespace as Obj

    from workers import holders

    r, _ = idle_broker

    def received(tag: str) -> None:
        request = Obj(id="job.batch-0", hostname="score@w", message=Obj(delivery_tag=tag))
        holders._record_holder(request=request)

    def ran(tag: str) -> None:
        request = Obj(hostname="score@w", is_eager=False, properties={"delivery_tag": tag})
        holders._forget_holder(task=Obj(request=request))

    me = holders._incarnation("score@w")
    try:
        received("first")
        received("retry")  # the retry arrives while the first run ends
        ran("first")
        assert r.get(holders.holder_key("first")) is None
        assert r.get(holders.holder_key("retry")) == me
        r.set(holders.holder_key("retry"), "score@other/1234")  # handed on by a sweep meanwhile
        ran("retry")
        assert r.get(holders.holder_key("retry")) == "score@other/1234"
        # receiving started this process's alive beat (a thread: its first SET may lag)
        wait_for(lambda: r.exists(holders.alive_key(me)), timeout=10, what="the alive key")
    finally:  # stop that beat before this test's Redis goes away
        holders._stop.set()
        for thread in threading.enumerate():
            if thread.name == "alive-beat":
                thread.join(5)
        holders._stop.clear()
        holders._beating.discard(me)

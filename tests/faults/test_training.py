"""Training faults: beat fires twice, two runs overlap, a training worker is SIGKILLed."""

from __future__ import annotations

import threading

import pytest

import models
from tests.faults._support import job_status, stop_and_check_handed_back, wait_for, wait_job
from tests.faults.conftest import base_env, bound
from tests.workers.helpers import publish_tiny_dataset

pytestmark = pytest.mark.integration


def test_beat_firing_twice_at_once_queues_one_run(tmp_path, private_redis):
    from workers import jobs
    from workers.runtime import redis_client
    from workers.tasks.train import scheduled

    with bound(base_env(tmp_path, private_redis.url)):
        r = redis_client()
        start = threading.Barrier(2)
        ids: list[str] = []

        def fire() -> None:
            start.wait()
            ids.append(scheduled.apply().get())  # what a worker runs for each beat message

        threads = [threading.Thread(target=fire) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(ids) == 2 and ids[0] == ids[1]
        assert [j["id"] for j in jobs.list_jobs(r, kind="train")] == [ids[0]]
        assert r.llen("train") == 1  # one train.run message for the workers


def test_second_concurrent_run_is_skipped_by_the_lock(tmp_path, private_redis):
    from workers import jobs
    from workers.runtime import redis_client
    from workers.tasks.train import LOCK, run

    with bound(base_env(tmp_path, private_redis.url)):
        r = redis_client()
        first, _ = jobs.create_job(r, kind="train", params={})
        second, _ = jobs.create_job(r, kind="train", params={})
        assert jobs.acquire_lock(r, LOCK, first, ttl_s=60)  # run `first` is training right now

        outcome = run.apply(args=[second]).get()
        assert outcome == {"skipped": True, "running": first}
        assert job_status(second)["status"] == "skipped"
        assert r.get(f"birthmark:lock:{LOCK}") == first  # the skipped run left the lock alone

        # A redelivered `first` (same owner) may take its own lock again; with no curated data
        # it cannot train, and it releases the lock whatever the error.
        run.apply(args=[first])
        assert job_status(first)["status"] != "skipped"
        assert r.get(f"birthmark:lock:{LOCK}") is None


@pytest.mark.skipif(
    not hasattr(models, "fit"), reason="models.fit (resumable training) is not merged yet"
)
def test_training_worker_sigkill_resumes_at_last_epoch(tmp_path, private_redis, workers):
    from workers.runtime import store
    from workers.submit import submit_task_job
    from workers.tasks.sweep import restore_orphans
    from workers.tasks.train import run

    # The visibility timeout stays at 7 h: the run comes back because the sweep finds its
    # worker's alive key expired (workers.holders) and puts the message back on the queue.
    env = base_env(tmp_path, private_redis.url, BIRTHMARK_WORKER_ALIVE_TTL_S="3")
    with bound(env):
        st = store()
        publish_tiny_dataset(st)
        first = workers.start(env, "train")
        params = {"epochs": 4, "image_size": 32, "batch_size": 8, "augment": False}
        job_id, _ = submit_task_job(run, kind="train", params=params)
        wait_for(
            lambda: (job_status(job_id) or {}).get("done", 0) >= 1,
            timeout=120,
            what="one epoch checkpointed",
        )
        first.kill()
        assert job_status(job_id)["status"] == "running"
        assert st.exists(f"models/runs/{job_id}/resume.bin")

        second = workers.start(env, "train")
        handed_back = []
        wait_for(
            lambda: handed_back.extend(restore_orphans(confirm_s=0.5)) or handed_back,
            timeout=30,
            what="the dead worker's run handed back",
        )
        assert [o.task_id for o in handed_back] == [f"{job_id}.run"]
        job = wait_job(job_id, timeout=180)
        assert job["status"] == "done", job
        assert "resumes from its last checkpoint" in second.output()
        assert job["done"] == job["total"] == 4
        assert st.exists(f"models/{job['result']['model_id']}/card.json")


def test_training_worker_sigterm_hands_the_run_back_at_once(tmp_path, private_redis, workers):
    """SIGTERM (``services down``, ``docker compose stop``) mid-run: the worker stops after the
    batch under way and requeues the run, which the next worker resumes at once. The visibility
    timeout stays at its 7 h default, so only the hand-back can bring the run back in time."""
    from workers.runtime import redis_client, store
    from workers.submit import submit_task_job
    from workers.tasks.train import LOCK, run

    env = base_env(tmp_path, private_redis.url)
    with bound(env):
        st, r = store(), redis_client()
        publish_tiny_dataset(st)
        first = workers.start(env, "train")
        epochs = 30
        params = {"epochs": epochs, "image_size": 32, "batch_size": 8, "augment": False}
        job_id, _ = submit_task_job(run, kind="train", params=params)
        wait_for(
            lambda: (job_status(job_id) or {}).get("done", 0) >= 2,
            timeout=120,
            what="two epochs trained",
        )
        job = stop_and_check_handed_back(first, job_id, "train")
        assert job["done"] < epochs, "the run ended before the SIGTERM; make it longer"
        assert not r.exists(f"birthmark:lock:{LOCK}")
        assert st.exists(f"models/runs/{job_id}/resume.bin")

        second = workers.start(env, "train")
        wait_for(
            lambda: (job_status(job_id) or {}).get("status") != "queued",
            timeout=60,
            interval=0.05,
            what="the run taken again",
        )
        assert job_status(job_id)["message"] == ""  # the hand-back's reason is history now
        job = wait_job(job_id, timeout=240)
        assert job["status"] == "done", job
        assert "resumes from its last checkpoint" in second.output()
        assert job["done"] == job["total"] == epochs
        # "done" is written before the task returns and its message is acknowledged
        wait_for(lambda: r.hlen("unacked") == 0, timeout=30, what="the run acknowledged")
        assert r.llen("train") == 0

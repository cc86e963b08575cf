"""Fault: a curation worker is told to shut down (SIGTERM) in the middle of a long job.

Celery's warm shutdown waits for running tasks, and a pull can run for hours, so the process
manager (``services down`` after 15 s, ``docker compose stop`` after its grace period) kills the
worker and the job's unacknowledged message would come back only after the visibility timeout
(7 h). The job's task stops at a safe point instead (isic-cli killed), its job goes back to
``queued`` and its message back on the queue, and the next worker runs it at once. The
training run's twin: ``test_training.py::test_training_worker_sigterm_hands_the_run_back_at_once``.
"""

from __future__ import annotations

import pytest

from benchmarks._stack import free_port
from tests.faults._support import job_status, stop_and_check_handed_back, wait_for, wait_job
from tests.faults.conftest import base_env, bound
from tests.isic_server import IsicTestServer, make_records

pytestmark = pytest.mark.integration


def test_curation_worker_sigterm_mid_pull_requeues_the_job_at_once(
    tmp_path, private_redis, workers
):
    from workers.runtime import redis_client, store
    from workers.submit import submit_task_job
    from workers.tasks.curation import pull

    # Nothing listens here: isic-cli retries for minutes, a stand-in for a long pull.
    env = base_env(
        tmp_path, private_redis.url, BIRTHMARK_ISIC_API_URL=f"http://127.0.0.1:{free_port()}"
    )
    with bound(env):
        r = redis_client()
        first = workers.start(env, "curation")
        job_id, _ = submit_task_job(pull, kind="pull", params={"search": "", "limit": 3})
        wait_for(
            lambda: (job_status(job_id) or {}).get("status") == "running",
            timeout=60,
            what="the pull running",
        )
        job = stop_and_check_handed_back(first, job_id, "curation")
        assert "isic-cli" in job["message"], job

        with IsicTestServer(make_records(3)) as server:
            second_env = {**env, "BIRTHMARK_ISIC_API_URL": server.url}
            workers.start(second_env, "curation")
            job = wait_job(job_id, timeout=120)
        assert job["status"] == "done", job
        assert job["result"]["counts"]["uploaded"] == 3
        # "done" is written before the task returns and its message is acknowledged
        wait_for(lambda: r.hlen("unacked") == 0, timeout=30, what="the pull acknowledged")
        assert r.llen("curation") == 0
        assert len(list(store().list(f"raw/isic/{job_id}/"))) >= 3

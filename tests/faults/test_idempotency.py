"""Fault: the same job is submitted twice (a client retry, a double click, two app replicas)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults._support import assert_one_row_per_input, upload_samples, wait_job
from tests.faults.conftest import bound

pytestmark = pytest.mark.integration


def test_same_idempotency_key_twice_is_one_job(scoring_service):
    from workers import jobs, results
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring

    with bound(scoring_service.env):
        st, r = store(), redis_client()
        keys = upload_samples(st, "idem", 5, size=(160, 120))
        items = [{"key": k, "source": k} for k in keys]
        before = {j["id"] for j in jobs.list_jobs(r, limit=1000)}

        # Four concurrent submissions with one key: exactly one creates (and queues) the job.
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda _: submit_scoring(items=items, idempotency_key="upload-session-42"),
                    range(4),
                )
            )
        assert len({job_id for job_id, _ in answers}) == 1
        assert sorted(created for _, created in answers) == [False, False, False, True]
        job_id = answers[0][0]
        job = wait_job(job_id, timeout=60)
        assert job["status"] == "done", job.get("message")

        # A late retry of the same submission after it finished: still the same job, nothing new.
        assert submit_scoring(items=items, idempotency_key="upload-session-42") == (job_id, False)
        new_jobs = {j["id"] for j in jobs.list_jobs(r, limit=1000)} - before
        assert new_jobs == {job_id}
        assert_one_row_per_input(list(results.read_rows(st, job_id)), keys)
        assert jobs.get_job(r, job_id)["done"] == len(keys)


def test_a_submitter_that_died_before_queueing_is_repaired_by_the_retry(scoring_service):
    from workers import jobs, results
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring

    with bound(scoring_service.env):
        st, r = store(), redis_client()
        keys = upload_samples(st, "orphan", 3, size=(160, 120))
        items = [{"key": k, "source": k} for k in keys]
        # The first submitter wrote the job record and died: no request body, nothing queued.
        job_id, created = jobs.create_job(
            r, kind="score", params={}, idempotency_key="died-before-queueing"
        )
        assert created and jobs.get_job(r, job_id)["status"] == "queued"

        # The client's retry gets the same job back, and this time it runs.
        assert submit_scoring(items=items, idempotency_key="died-before-queueing") == (
            job_id, False,
        )  # fmt: skip
        job = wait_job(job_id, timeout=60)
        assert job["status"] == "done", job.get("message")
        assert_one_row_per_input(list(results.read_rows(st, job_id)), keys)
        # Once queued, further retries queue nothing more.
        assert not jobs.claim_enqueue(r, job_id)

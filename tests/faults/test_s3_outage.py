"""Fault: the S3 server goes away for ~6 s mid-job and comes back on the same address.

What happens: reads and writes fail with connection errors after botocore's own retries; the store
raises ``StoreUnavailable`` and the tasks' ``autoretry_for`` re-runs the batch with exponential
backoff (``retry_backoff``, jittered, capped at 30 s). Part files are keyed by batch, so a batch
that half-ran before the outage rewrites the same part. The job completes with one row per input.

moto keeps its buckets in a process-wide backend, so a new ``ThreadedMotoServer`` on the same
port in the same process serves the same objects (checked below), like a restarted S3 endpoint.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import free_port, wait_port
from tests.faults._support import (
    assert_one_row_per_input,
    job_status,
    upload_samples,
    wait_for,
    wait_job,
)
from tests.faults.conftest import base_env, bound
from tests.workers.helpers import publish_tiny_champion

pytestmark = pytest.mark.integration

N_INPUTS = 30
BATCH = 3
OUTAGE_S = 6


def _moto(port: int):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    return server


def test_s3_outage_mid_job_is_retried_with_backoff(
    tmp_path, private_redis, workers, aws_credentials
):
    from workers import results
    from workers.runtime import store
    from workers.submit import submit_scoring

    port = free_port()
    s3 = _moto(port)
    try:
        env = base_env(
            tmp_path,
            private_redis.url,
            BIRTHMARK_STORE=f"s3://outage-{uuid.uuid4().hex[:8]}",
            BIRTHMARK_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            BIRTHMARK_SCORE_BATCH_SIZE=str(BATCH),
            BIRTHMARK_SCORE_PREFETCH_THREADS="1",
        )
        with bound(env):
            st = store()
            publish_tiny_champion(st)
            keys = upload_samples(st, "outage", N_INPUTS)
            worker = workers.start(env)
            job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys])
            wait_for(
                lambda: (job_status(job_id) or {}).get("done", 0) >= BATCH,
                timeout=60,
                interval=0.02,
                what="a batch done",
            )
            s3.stop()
            assert job_status(job_id)["done"] < N_INPUTS, "job finished before the outage"
            time.sleep(OUTAGE_S)
            s3 = _moto(port)  # a new server process-wide state: the same buckets and objects
            job = wait_job(job_id, timeout=120)
            assert job["status"] == "done", job
            rows = list(results.read_rows(st, job_id))
            assert_one_row_per_input(rows, keys)
            assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
            assert (job["done"], job["errors"]) == (N_INPUTS, 0)
            log = worker.output()
            assert "StoreUnavailable" in log and "retry" in log.lower()
    finally:
        s3.stop()


def test_ensure_bucket_on_unreachable_s3_is_transient(aws_credentials):
    """A worker's first store use can hit an outage: it must be retryable, not a task failure."""
    import boto3
    from botocore.config import Config

    from workers.store import S3Store, StoreUnavailable

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),  # no botocore backoff: keep the test fast
    )
    st = S3Store("any", client=client)
    with pytest.raises(StoreUnavailable):
        st.ensure_bucket()

"""`--wait` tells the user when nothing consumes the job's queue instead of waiting silently."""

from __future__ import annotations

import pytest

from workers import jobs
from workers.cli import _common
from workers.runtime import redis_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _queued_job(kind: str) -> str:
    """A job record in state ``queued`` with no task on any queue (nothing for a worker to take)."""
    job_id, created = jobs.create_job(redis_client(), kind=kind, params={})
    assert created
    return job_id


def test_wait_warns_once_when_no_worker_consumes_the_queue(env, monkeypatch, capsys):
    monkeypatch.setattr(_common, "NO_WORKER_CHECK_S", 0.0)
    job_id = _queued_job("train")
    with pytest.raises(TimeoutError):
        _common.wait_for_job(job_id, quiet=True, poll_s=0.05, timeout_s=2.5)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert job_id in err and "'train'" in err and "birthmark services up" in err


def test_wait_stays_quiet_when_a_worker_consumes_the_queue(env, monkeypatch, capsys, start_worker):
    start_worker(env, "curation")
    monkeypatch.setattr(_common, "NO_WORKER_CHECK_S", 0.0)
    job_id = _queued_job("curate")
    with pytest.raises(TimeoutError):
        _common.wait_for_job(job_id, quiet=True, poll_s=0.05, timeout_s=2.5)
    assert "warning:" not in capsys.readouterr().err

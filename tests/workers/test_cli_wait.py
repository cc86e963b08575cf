"""`--wait` follows the job's change notifications, and says so when nothing consumes its queue."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import RedisServer, reset_caches
from workers import jobs
from workers.cli import _common
from workers.results import summarize_rows
from workers.runtime import redis_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def env(env, monkeypatch, tmp_path):
    """The usual env on a redis of its own: the job records other tests leave must not count."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("BIRTHMARK_REDIS_URL", server.url)
    reset_caches()
    yield {**env, "BIRTHMARK_REDIS_URL": server.url}
    reset_caches()
    server.stop()


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
    err = " ".join(capsys.readouterr().err.split())  # rich wraps at the terminal width
    assert err.count("warning:") == 1
    assert job_id in err and "'train'" in err and "birthmark services up" in err


def test_wait_stays_quiet_when_a_worker_consumes_the_queue(env, monkeypatch, capsys, start_worker):
    start_worker(env, "curation")
    monkeypatch.setattr(_common, "NO_WORKER_CHECK_S", 0.0)
    job_id = _queued_job("curate")
    with pytest.raises(TimeoutError):
        _common.wait_for_job(job_id, quiet=True, poll_s=0.05, timeout_s=2.5)
    assert "warning:" not in capsys.readouterr().err


def test_wait_names_the_running_job_a_queued_one_waits_behind(env, monkeypatch, capsys):
    monkeypatch.setattr(_common, "NO_WORKER_CHECK_S", 0.0)
    running = _queued_job("train")
    jobs.update_job(redis_client(), running, status="running")  # a solo worker busy with it
    job_id = _queued_job("train")
    with pytest.raises(TimeoutError):
        _common.wait_for_job(job_id, quiet=True, poll_s=0.05, timeout_s=2.5)
    err = " ".join(capsys.readouterr().err.split())  # rich wraps at the terminal width
    assert f"queued behind running job {running}" in err and "warning:" not in err


def test_a_waiting_client_wakes_when_the_job_changes_not_at_its_next_poll(env):
    r = redis_client()
    job_id = _queued_job("score")
    with jobs.watching(r, job_id) as changed:
        assert changed(0.2) is False  # nothing happened
        update = threading.Timer(0.3, jobs.update_job, (r, job_id), {"status": "running"})
        update.start()
        started = time.monotonic()
        assert changed(30) is True
        assert 0.25 < time.monotonic() - started < 5  # woken by the update, long before 30 s
        jobs.complete_batch(r, job_id, 0, summarize_rows([]))
        assert changed(30) is True  # a batch written counts as a change
        jobs.complete_batch(r, job_id, 0, summarize_rows([]))  # the same batch again: no change
        assert changed(0.3) is False


def test_wait_for_job_returns_as_soon_as_the_job_ends(env):
    job_id = _queued_job("score")
    threading.Timer(0.3, jobs.update_job, (redis_client(), job_id), {"status": "done"}).start()
    started = time.monotonic()
    job = _common.wait_for_job(job_id, quiet=True, poll_s=30, timeout_s=60)
    assert job["status"] == "done" and time.monotonic() - started < 5

"""Polling with deadlines, job waiting and small inputs shared by the fault tests."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

import redis

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:g} s")
        time.sleep(interval)


def freeze_when(worker, predicate: Callable[[], object], *, timeout: float, what: str) -> None:
    """Wait until ``predicate`` holds while ``worker`` is stopped (SIGSTOP), and return with it
    still stopped: the fault that follows strikes exactly that state, not a moment later."""

    def holds_while_frozen() -> bool:
        worker.freeze()
        if predicate():
            return True
        worker.thaw()
        return False

    wait_for(holds_while_frozen, timeout=timeout, interval=0.01, what=what)


def job_status(job_id: str) -> dict[str, Any] | None:
    """The job record, or None while Redis is unreachable (a fault may be in progress)."""
    from workers import jobs
    from workers.runtime import redis_client

    try:
        return jobs.get_job(redis_client(), job_id)
    except (redis.ConnectionError, redis.TimeoutError):
        return None


def wait_job(job_id: str, *, timeout: float = 90.0) -> dict[str, Any]:
    def finished():
        job = job_status(job_id)
        return job if job and job["status"] in ("done", "failed") else None

    return wait_for(finished, timeout=timeout, interval=0.2, what=f"job {job_id} finished")


def part_count(store, job_id: str) -> int:
    return sum(1 for _ in store.list(f"results/{job_id}/part-"))


def assert_one_row_per_input(rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Exactly one row per input key: none lost, none duplicated."""
    counts = Counter(r["key"] for r in rows)
    duplicated = {k: n for k, n in counts.items() if n > 1}
    assert not duplicated, f"duplicated rows: {duplicated}"
    lost, extra = sorted(set(keys) - set(counts)), sorted(set(counts) - set(keys))
    assert not lost and not extra, f"lost: {lost[:10]}, extra: {extra[:10]}"


@lru_cache(maxsize=16)
def _jpeg(i: int, size: tuple[int, int]) -> bytes:
    from tests.workers.helpers import good_jpeg

    return good_jpeg(i, size=size)


def sample_jpeg(i: int, *, size: tuple[int, int] = (640, 480)) -> bytes:
    """Photo-like JPEGs, 8 distinct ones reused: generating each costs ~0.1 s of test time."""
    return _jpeg(i % 8, size)


def upload_samples(store, name: str, n: int, *, size: tuple[int, int] = (640, 480)) -> list[str]:
    """Put ``n`` sample JPEGs under ``uploads/<name>/``; returns their keys in order."""
    keys = [f"uploads/{name}/{i:03d}.jpg" for i in range(n)]
    for i, key in enumerate(keys):
        store.put(key, sample_jpeg(i, size=size))
    return keys


def stop_and_check_handed_back(worker, job_id: str, queue: str) -> dict[str, Any]:
    """SIGTERM ``worker`` (SIGKILL if not gone in 15 s) and check that it exited cleanly and
    handed its job back: the job ``queued`` with the reason, its message waiting in ``queue``
    and none held. Returns the job record."""
    from workers.runtime import redis_client

    worker.stop()
    assert worker.proc.returncode == 0, worker.output()[-3000:]
    job = job_status(job_id)
    assert job["status"] == "queued" and "worker shut down" in job["message"], job
    r = redis_client()
    assert r.llen(queue) == 1 and r.hlen("unacked") == 0  # back on the queue, not held
    return job

"""Fault-suite fixtures: private redis-servers, env binding that also rebinds the in-process Celery
app, and worker processes that are killed (not drained) at teardown to keep the suite fast."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks._stack import rebind_celery
from tests.conftest import RedisServer, Worker, reset_caches


@contextmanager
def bound(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Set ``env`` in this process (settings, store, redis client, Celery broker) for a block."""
    mp = pytest.MonkeyPatch()
    try:
        for key, value in env.items():
            mp.setenv(key, value)
        reset_caches()
        rebind_celery()
        yield env
    finally:
        mp.undo()
        reset_caches()
        rebind_celery()


def base_env(root: Path, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "BIRTHMARK_REDIS_URL": redis_url,
        "BIRTHMARK_STORE": str(root / "store"),
        "BIRTHMARK_HOME": str(root / "home"),
        "BIRTHMARK_DEVICE": "cpu",
        # No automatic sweep unless a test asks for one: tests that take messages away by hand
        # would race a worker's sweep (test_lost_messages.py tests the worker's own).
        "BIRTHMARK_SWEEP_INTERVAL_S": "0",
        **extra,
    }


class Workers:
    """Starts worker processes; at teardown SIGKILLs them (their private broker is thrown away)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[Worker] = []

    def start(self, env: dict[str, str], queues: str = "score", **kw) -> Worker:
        log = self.logdir / f"worker-{len(self.started)}-{uuid.uuid4().hex[:4]}.log"
        worker = Worker(env, queues, log, **kw)
        self.started.append(worker)
        return worker.start()

    def close(self) -> None:
        for worker in self.started:
            worker.kill()
            if not worker.fh.closed:
                worker.fh.close()


@pytest.fixture
def workers(tmp_path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def aws_credentials() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


MAX_UPLOAD_BYTES = 1_000_000
SERVICE_BATCH = 4


class ScoringService:
    """A private redis-server, a fresh bucket on the session's S3 server and one score worker."""

    def __init__(self, env: dict[str, str], redis: RedisServer, worker: Worker) -> None:
        self.env = env
        self.redis = redis
        self.worker = worker


@pytest.fixture(scope="session")
def scoring_service(tmp_path_factory, s3_server) -> Iterator[ScoringService]:
    """Shared by the tests that need one worker (bad uploads, idempotency, pickle refusal, Redis
    restart): one worker start (~7 s) instead of one per test. Tests use their own keys and jobs."""
    from tests.workers.helpers import publish_tiny_champion
    from workers.runtime import store

    root = tmp_path_factory.mktemp("scoring-service")
    # Append-only and on a fixed port: the Redis-restart test stops and restarts it.
    server = RedisServer(root / "redis", appendonly=True)
    server.start()
    env = base_env(
        root,
        server.url,
        BIRTHMARK_STORE=f"s3://faults-{uuid.uuid4().hex[:8]}",
        BIRTHMARK_S3_ENDPOINT_URL=s3_server,
        BIRTHMARK_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
        BIRTHMARK_SCORE_BATCH_SIZE=str(SERVICE_BATCH),
        BIRTHMARK_VISIBILITY_TIMEOUT_S="10",
    )
    pool = Workers(root)
    try:
        with bound(env):
            publish_tiny_champion(store())
        worker = pool.start(env)
        yield ScoringService(env, server, worker)
    finally:
        pool.close()
        server.stop()

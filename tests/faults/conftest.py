"""Fault-suite fixtures: private redis-servers, env binding that also rebinds the in-process Celery
app, and worker processes that are killed (not drained) at teardown to keep the suite fast."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import RedisServer, Worker, reset_caches


def rebind_celery() -> None:
    """Point the in-process Celery app at the current BIRTHMARK_REDIS_URL.

    Celery reads ``broker_url`` once and keeps a connection pool; tests here use several brokers.
    """
    from workers.app import app
    from workers.runtime import redis_url

    url = redis_url()
    app.conf.broker_url = url
    app.conf.result_backend = url
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def bound(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Set ``env`` in this process (settings, store, redis client, Celery broker) for a block."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        reset_caches()
        rebind_celery()
        try:
            yield env
        finally:
            reset_caches()


def base_env(root: Path, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "BIRTHMARK_REDIS_URL": redis_url,
        "BIRTHMARK_STORE": str(root / "store"),
        "BIRTHMARK_HOME": str(root / "home"),
        "BIRTHMARK_DEVICE": "cpu",
        **extra,
    }


class Workers:
    """Starts worker processes; at teardown SIGKILLs them (their private broker is thrown away)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[Worker] = []

    def start(self, env: dict[str, str], queues: str = "score") -> Worker:
        log = self.logdir / f"worker-{len(self.started)}-{uuid.uuid4().hex[:4]}.log"
        worker = Worker(env, queues, log)
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


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server for one test: leftovers of a fault never leak into the next test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def aws_credentials() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

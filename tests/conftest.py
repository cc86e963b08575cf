"""Real parts on loopback: a redis-server, moto's S3 HTTP server, and Celery worker processes."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The real services live in one importable module so the benchmarks start them the same way.
from benchmarks._stack import (  # noqa: F401 (re-exported for tests)
    REPO,
    RedisServer,
    S3Server,
    Worker,
    free_port,
    reset_caches,
    wait_port,
)

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server for one test: its leftovers (faults, queued messages) never reach the next."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 over HTTP on loopback (see ``benchmarks._stack.S3Server``)."""
    server = S3Server().start()
    yield server.url
    server.stop()


@pytest.fixture
def env(monkeypatch, tmp_path, redis_server) -> dict[str, str]:
    """BIRTHMARK_* for one test: shared redis, a fresh local store and home. Returns the env."""
    values = {
        "BIRTHMARK_REDIS_URL": redis_server.url,
        "BIRTHMARK_STORE": str(tmp_path / "store"),
        "BIRTHMARK_HOME": str(tmp_path / "home"),
        "BIRTHMARK_DEVICE": "cpu",
        "BIRTHMARK_SWEEP_INTERVAL_S": "0",  # no worker sweeps unless a test asks (faults/)
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    reset_caches()
    yield values
    reset_caches()


@pytest.fixture
def s3_env(env, monkeypatch, s3_server) -> dict[str, str]:
    """Like ``env`` but the store is a fresh bucket on the loopback S3 server."""
    bucket = f"bm-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("BIRTHMARK_STORE", f"s3://{bucket}")
    monkeypatch.setenv("BIRTHMARK_S3_ENDPOINT_URL", s3_server)
    reset_caches()
    return {**env, "BIRTHMARK_STORE": f"s3://{bucket}", "BIRTHMARK_S3_ENDPOINT_URL": s3_server}


@pytest.fixture
def start_worker(tmp_path):
    """Factory: ``start_worker(env, "score")`` -> a started Worker, stopped after the test."""
    workers: list[Worker] = []

    def start(env: dict[str, str], queues: str = "score,train,curation", **kw) -> Worker:
        w = Worker(env, queues, tmp_path / f"worker-{len(workers)}.log", **kw).start()
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "manifest.csv").exists():
        pytest.skip(f"real images not present at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


def have(binary: str) -> bool:
    return shutil.which(binary) is not None

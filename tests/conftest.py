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


<<<<<<< HEAD
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class RedisServer:
    """A real redis-server process on a free loopback port."""

    def __init__(
        self, workdir: Path, *, appendonly: bool = False, password: str | None = None
    ) -> None:
        from workers.embedded import redis_server_binary

        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.binary = redis_server_binary()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.workdir), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no"]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


=======
>>>>>>> bench
@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
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

"""Real parts on loopback: a redis-server, moto's S3 HTTP server, and Celery worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's ThreadedMotoServer: real S3 over HTTP on loopback."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def reset_caches() -> None:
    from workers import runtime, settings

    settings.get_settings.cache_clear()
    runtime.redis_url.cache_clear()
    runtime.redis_client.cache_clear()
    runtime.store.cache_clear()


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


class Worker:
    """A real `celery worker` subprocess for the given queues."""

    def __init__(self, env: dict[str, str], queues: str, log: Path, *, pool: str = "solo") -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.queues = queues
        self.log = log
        self.pool = pool
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Worker:
        name = f"{self.queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@test"
        args = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", self.queues,
                "-n", name, "--pool", self.pool, "--concurrency", "1", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
        self.fh = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            env=self.env,
            cwd=REPO,
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            if b"ready." in self.log.read_bytes():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready: {self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


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

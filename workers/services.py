"""Background services on one machine: embedded redis, a worker per queue, beat; by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from workers.embedded import ensure_redis, is_process, pid_alive, process_started, stop_redis
from workers.settings import Settings

__all__ = ["POOLS", "SERVICES", "worker_command", "services_up", "services_down", "services_status"]


@dataclass(frozen=True)
class Service:
    name: str
    args: tuple[str, ...]


# (pool, concurrency) per queue. Training runs one task at a time. A score worker runs two batch
# tasks in threads: the second's images download and decode while the first's are on the model
# (they take turns on it, see workers.scoring), so the model does not idle between batches.
POOLS = {"score": ("threads", 2), "train": ("solo", 1), "curation": ("threads", 4)}


def worker_command(
    queue: str, *, concurrency: int | None = None, pool: str | None = None
) -> list[str]:
    """The celery worker command line for one queue (pool and concurrency from ``POOLS``)."""
    if queue not in POOLS:
        raise ValueError(f"unknown queue {queue!r}; expected score, train or curation")
    pool = pool or POOLS[queue][0]
    concurrency = concurrency or POOLS[queue][1]
    return [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker",
        "-Q", queue, "-n", f"{queue}@%h", "--pool", pool, "--concurrency", str(concurrency),
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


SERVICES = (
    Service("worker-score", tuple(worker_command("score"))),
    Service("worker-train", tuple(worker_command("train"))),
    Service("worker-curation", tuple(worker_command("curation"))),
    Service(
        "beat",
        (sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "INFO"),
    ),
)


def _pid_file(home: Path, name: str) -> Path:
    return home / "run" / f"{name}.json"


def _running(home: Path, name: str) -> int | None:
    """The PID of service ``name`` if the process its PID file names still runs.

    Each service leads its own process group (``start_new_session``); a PID that is alive but not
    the process recorded (another start time) or not a group leader was reused by something else.
    """
    try:
        record = json.loads(_pid_file(home, name).read_text())
    except (OSError, ValueError):
        return None
    pid = record["pid"]
    if not is_process(pid, record.get("started")):
        return None
    try:
        return pid if os.getpgid(pid) == pid else None
    except ProcessLookupError:
        return None


def services_up(
    settings: Settings, *, beat: bool = True, redis_url: str | None = None
) -> dict[str, int]:
    """Start redis (if embedded) and every service that is not already running; returns PIDs."""
    home = settings.home
    (home / "run").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    url = redis_url or settings.redis_url or ensure_redis(home)
    env = {**os.environ, "BIRTHMARK_REDIS_URL": url, "BIRTHMARK_HOME": str(home)}
    env["BIRTHMARK_STORE"] = _absolute_store(settings.store)
    pids = {}
    for svc in SERVICES:
        if svc.name == "beat" and not beat:
            continue
        pid = _running(home, svc.name)
        if pid is None:
            args = list(svc.args)
            if svc.name == "beat":
                args += ["--schedule", str(home / "run" / "celerybeat-schedule")]
            log = open(home / "logs" / f"{svc.name}.log", "ab")  # noqa: SIM115 - owned by the child
            proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=os.getcwd(),
            )  # fmt: skip
            pid = proc.pid
            record = {"pid": pid, "started": process_started(pid), "args": args}
            _pid_file(home, svc.name).write_text(json.dumps(record))
        pids[svc.name] = pid
    return pids


def _absolute_store(uri: str) -> str:
    return uri if uri.startswith("s3://") else str(Path(uri).expanduser().resolve())


def services_down(
    settings: Settings, *, keep_redis: bool = False, timeout_s: float = 15.0
) -> list[str]:
    """Stop every tracked service by PID (TERM, then KILL after ``timeout_s``)."""
    home = settings.home
    running = {}
    for svc in SERVICES:
        pid = _running(home, svc.name)
        _pid_file(home, svc.name).unlink(missing_ok=True)
        if pid is not None and _signal_group(pid, signal.SIGTERM):
            running[svc.name] = pid
    # All at once: each warm shutdown may wait for its tasks, so one by one could take 4 x timeout.
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in running.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in running.values():
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
    stopped = list(running)
    if not keep_redis and settings.is_embedded_redis and stop_redis(home):
        stopped.append("redis")
    return stopped


def _signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # it exited since it was looked up
        return False
    return True


def services_status(settings: Settings) -> dict[str, int | None]:
    return {svc.name: _running(settings.home, svc.name) for svc in SERVICES}

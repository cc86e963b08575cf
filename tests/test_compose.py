"""docker-compose.yml: no engine runs here, so parse it; check it names real modules and queues."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import time
import tomllib
from pathlib import Path

import yaml

from workers.app import QUEUES, app
from workers.services import POOLS

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
EXPECTED = {
    "redis",
    "minio",
    "createbucket",
    "worker-score",
    "worker-train",
    "worker-curation",
    "beat",
    "flower",
}


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_required_service_is_defined():
    assert EXPECTED <= set(_services())


def test_celery_commands_name_the_real_app_and_queues():
    seen_queues = set()
    for name, svc in _services().items():
        cmd = svc.get("command")
        if not isinstance(cmd, list) or cmd[0] != "celery":
            continue
        module = cmd[cmd.index("-A") + 1]
        assert importlib.import_module(module).app is app, name
        if "worker" in cmd:
            queue = cmd[cmd.index("-Q") + 1]
            assert queue in QUEUES, f"{name} listens on unknown queue {queue}"
            seen_queues.add(queue)
            assert name == f"worker-{queue}"
            pool = (cmd[cmd.index("--pool") + 1], int(cmd[cmd.index("--concurrency") + 1]))
            assert pool == POOLS[queue], f"{name} runs {pool}, `birthmark services` {POOLS[queue]}"
    assert seen_queues == set(QUEUES)


def test_every_long_running_service_has_a_healthcheck_and_app_services_wait_for_redis():
    for name, svc in _services().items():
        if name in ("createbucket", "cli"):
            continue
        assert "healthcheck" in svc, f"{name} has no healthcheck"
        if svc.get("build") == ".":
            assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
            assert svc["environment"]["BIRTHMARK_REDIS_URL"].startswith("redis://redis:")


def test_task_routes_cover_every_registered_task():
    app.loader.import_default_modules()
    ours = [t for t in app.tasks if t.split(".")[0] in QUEUES]
    assert {
        "score.batch",
        "score.plan",
        "score.watch",
        "train.run",
        "curation.pull",
        "curation.run",
    } <= set(ours)
    for task in ours:
        assert app.amqp.router.route({}, task)["queue"].name == task.split(".")[0]


def test_a_solo_worker_busy_with_a_task_is_not_reported_unhealthy():
    """A solo pool answers no ping while it runs a task: training would mark it unhealthy."""
    from workers.tasks.train import LOCK

    for queue, (pool, _) in POOLS.items():
        check = _services()[f"worker-{queue}"]["healthcheck"]["test"][1]
        if pool == "solo":
            assert "|| " in check and f"birthmark:lock:{LOCK}" in check, queue


def test_beat_is_healthy_only_while_it_keeps_rewriting_its_schedule(tmp_path):
    """`test -f` on the schedule file passed for a hung beat once the file had ever existed.
    The check runs here against a stand-in folder: missing, fresh, then stale."""
    from celery.beat import Scheduler

    beat = _services()["beat"]
    schedule = Path(beat["command"][beat["command"].index("--schedule") + 1])
    kind, check = beat["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and str(schedule.parent) in check
    window_s = 60 * int(re.search(r"-mmin -(\d+)\b", check).group(1))
    # Beat writes the file on waking once sync_every (180 s) has passed since the last write,
    # and sleeps at most beat_max_loop_interval (celery's default 300 s unless set).
    assert app.conf.beat_max_loop_interval, "unset, beat may sleep 300 s between writes"
    assert window_s > Scheduler.sync_every + app.conf.beat_max_loop_interval

    def healthy() -> bool:
        local = check.replace(str(schedule.parent), str(tmp_path))
        return subprocess.run(["sh", "-c", local], timeout=30).returncode == 0

    assert not healthy()  # beat never wrote it
    (tmp_path / schedule.name).write_bytes(b"")
    assert healthy()
    stale = time.time() - window_s - 5
    os.utime(tmp_path / schedule.name, (stale, stale))
    assert not healthy()


def test_published_ports_are_on_loopback():
    """MinIO's root credentials have well-known defaults and Flower has no authentication."""
    for name, svc in _services().items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_the_image_installs_the_pinned_cpu_torch():
    dockerfile = (COMPOSE.parent / "Dockerfile").read_text()
    pyproject = tomllib.loads((COMPOSE.parent / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch")]
    assert len(pins) == 2, pins
    torch_line = next(line for line in dockerfile.splitlines() if " ".join(pins) in line)
    assert '--index-url "$TORCH_INDEX_URL"' in torch_line
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    # The build context leaves out the virtualenv and any credentials file.
    ignored = (COMPOSE.parent / ".dockerignore").read_text().split()
    assert {".venv", ".env", ".git"} <= set(ignored)


def test_workers_get_time_to_hand_their_work_back_on_stop():
    # Compose's default is 10 s; a worker's warm shutdown finishes its two scoring batches and a
    # long task's hand-back (workers/shutdown.py) in seconds, so 30 s leaves room on a slow host.
    for name, svc in _services().items():
        if name.startswith("worker-"):
            grace = svc.get("stop_grace_period", "10s")
            assert grace.endswith("s") and int(grace[:-1]) >= 30, (name, grace)


def test_minio_pushes_upload_events_where_the_watcher_reads_them():
    services = _services()
    minio, app_env = services["minio"]["environment"], services["beat"]["environment"]
    target = {
        k.rsplit("_", 1)[0]: v for k, v in minio.items() if k.startswith("MINIO_NOTIFY_REDIS")
    }
    enable = next(k for k in minio if k.startswith("MINIO_NOTIFY_REDIS_ENABLE_"))
    target_id = enable.rsplit("_", 1)[1]
    assert target["MINIO_NOTIFY_REDIS_ENABLE"] == "on"
    assert target["MINIO_NOTIFY_REDIS_FORMAT"] == "access"  # a list; "namespace" writes a hash
    assert target["MINIO_NOTIFY_REDIS_KEY"] == app_env["BIRTHMARK_UPLOAD_EVENTS_KEY"]
    # MinIO writes to database 0 of the broker's Redis.
    assert app_env["BIRTHMARK_REDIS_URL"] == f"redis://{target['MINIO_NOTIFY_REDIS_ADDRESS']}/0"
    subscribe = services["createbucket"]["command"][0]
    assert f"arn:minio:sqs::{target_id}:redis --event put --prefix uploads/" in subscribe
    # The watcher's prefix is the default, uploads/, as subscribed.
    assert "BIRTHMARK_WATCH_PREFIX" not in app_env

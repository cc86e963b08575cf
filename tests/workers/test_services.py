"""`birthmark services` bookkeeping: PID files that outlived their process, the embedded redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from workers import services
from workers.embedded import ensure_redis, stop_redis
from workers.settings import Settings


def _sleeper(*, new_session: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=new_session
    )


@pytest.mark.parametrize("new_session", [True, False])
def test_a_reused_pid_is_neither_running_nor_killed(tmp_path, new_session):
    """After a reboot or kill -9 the PID in a PID file may be some other process's."""
    settings = Settings(home=tmp_path / "home", redis_url="redis://127.0.0.1:1/0")
    (settings.home / "run").mkdir(parents=True)
    other = _sleeper(new_session=new_session)
    try:
        record = {"pid": other.pid, "started": "1", "args": ["celery", "beat"]}
        (settings.home / "run" / "beat.json").write_text(json.dumps(record))
        if not new_session:  # an old PID file (no start time): not a group leader, not ours
            (settings.home / "run" / "worker-train.json").write_text(json.dumps({"pid": other.pid}))

        assert set(services.services_status(settings).values()) == {None}
        assert services.services_down(settings, timeout_s=1) == []
        assert other.poll() is None, "services down killed a process it did not start"
    finally:
        other.kill()
        other.wait()


def test_the_embedded_redis_comes_back_on_its_port(tmp_path):
    """Workers keep the URL they were started with: a new port would leave them retrying forever."""
    home = tmp_path / "home"
    url = ensure_redis(home)
    pid = json.loads((home / "redis" / "server.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # this test started it: reap it, or it lingers as a zombie
    try:
        assert ensure_redis(home) == url
    finally:
        assert stop_redis(home)

"""The benchmark's CPU accounting: a process's CPU seconds with its children's, from /proc."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks._stack import cpu_seconds
from benchmarks.e2e import _cpu_per_image

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

_BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def _wait_until_burnt(proc: subprocess.Popen, seconds: float) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        used = cpu_seconds(proc.pid)
        if used is not None and used >= seconds:
            return used
        time.sleep(0.05)
    raise AssertionError(f"{proc.pid} did not use {seconds} s of CPU: {cpu_seconds(proc.pid)}")


def test_counts_a_process_and_the_children_it_started():
    # The parent burns 0.3 s, starts a child that burns 0.5 s, and waits for it without exiting.
    child = _BURN.format(s=0.5) + "time.sleep(60)\n"
    parent = (
        _BURN.format(s=0.3)
        + f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {child!r}])\n"
        + "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        used = _wait_until_burnt(proc, 0.75)
        assert used < 5.0
    finally:
        subprocess.run(["pkill", "-P", str(proc.pid)], check=False)
        proc.kill()
        proc.wait()


def test_a_process_that_is_gone_is_unknown():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert cpu_seconds(proc.pid) is None


def test_cpu_per_image_is_the_median_per_process_and_unknown_stays_unknown():
    runs = [
        {"bare": 1.0},
        {"bare": 3.0},
        {"bare": 2.0},
        {"worker": 0.5, "s3": None, "queued": 0.5},
        {"worker": 0.7, "s3": None, "queued": 0.7},
    ]
    ms = _cpu_per_image(runs, n=10)
    assert ms.pop("s3") is None  # an external S3 server: not counted, not guessed
    assert ms == pytest.approx({"bare": 200.0, "worker": 60.0, "queued": 60.0})

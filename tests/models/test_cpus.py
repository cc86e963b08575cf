"""CPUs available to the process: affinity capped by a cgroup quota, read from real files laid out
as /proc and /sys show them in a container, on a host, and under cgroup v1."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

from models.cpus import available_cpus, cgroup_cpu_limit


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_a_v2_container_limited_to_one_and_a_half_cpus(tmp_path):
    root = _write(
        tmp_path,
        {
            "proc/self/mountinfo": V2_MOUNT,
            "proc/self/cgroup": "0::/\n",
            "sys/fs/cgroup/cpu.max": "150000 100000\n",
        },
    )
    assert cgroup_cpu_limit(root=root) == pytest.approx(1.5)
    assert available_cpus(root=root) == min(_affinity(), 2)


def test_on_a_v2_host_the_tightest_quota_on_the_way_up_wins(tmp_path):
    root = _write(
        tmp_path,
        {
            "proc/self/mountinfo": V2_MOUNT,
            "proc/self/cgroup": "0::/workers.slice/score.scope\n",
            "sys/fs/cgroup/cpu.max": "max 100000\n",
            "sys/fs/cgroup/workers.slice/cpu.max": "100000 100000\n",
            "sys/fs/cgroup/workers.slice/score.scope/cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cpu_limit(root=root) == pytest.approx(1.0)
    assert available_cpus(root=root) == 1


def test_a_v1_docker_container_with_a_quota_of_three_cpus(tmp_path):
    root = _write(
        tmp_path,
        {
            "proc/self/mountinfo": (
                "25 24 0:22 /docker/ab12 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup "
                "rw,cpu,cpuacct\n"
                "26 24 0:23 /docker/ab12 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
            ),
            "proc/self/cgroup": "5:memory:/docker/ab12\n4:cpu,cpuacct:/docker/ab12\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "300000\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_limit(root=root) == pytest.approx(3.0)
    assert available_cpus(root=root) == min(_affinity(), 3)


@pytest.mark.parametrize(
    "files",
    [
        {},  # no /proc at all (not Linux)
        {"proc/self/mountinfo": V2_MOUNT, "proc/self/cgroup": "0::/\n"},  # no cpu.max
        {
            "proc/self/mountinfo": V2_MOUNT,
            "proc/self/cgroup": "0::/\n",
            "sys/fs/cgroup/cpu.max": "max 100000\n",
        },
        {
            "proc/self/mountinfo": "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
            "proc/self/cgroup": "2:cpu:/\n",
            "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
        },
    ],
    ids=["no-proc", "no-cpu-max", "v2-max", "v1-unlimited"],
)
def test_no_quota_leaves_the_affinity(tmp_path, files):
    root = _write(tmp_path, files)
    assert cgroup_cpu_limit(root=root) is None
    assert available_cpus(root=root) == _affinity()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and /sys")
def test_this_process():
    limit = cgroup_cpu_limit()
    expected = _affinity() if limit is None else min(_affinity(), math.ceil(limit))
    assert available_cpus() == expected
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def _affinity() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

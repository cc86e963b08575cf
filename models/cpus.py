"""How many CPUs this process can really use: its affinity mask, capped by a cgroup CPU quota.

``os.cpu_count()`` counts the host's CPUs. A container limited to 2 CPUs (``docker --cpus 2``, a
Kubernetes CPU limit) on a 64-core host still sees 64, and torch would start 64 threads that share
two CPUs' worth of time and are throttled every period. The quota is read where the kernel keeps
it: ``cpu.max`` (cgroup v2) or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (v1), in the process's
own cgroup and each parent up to the mount, the tightest one winning.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath

__all__ = ["available_cpus", "cgroup_cpu_limit"]


def available_cpus(*, root: Path = Path("/")) -> int:
    """CPUs this process may use: those it may run on, no more than its cgroup quota allows."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root=root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def cgroup_cpu_limit(*, root: Path = Path("/")) -> float | None:
    """CPUs' worth of time this process's cgroups allow (quota / period, the tightest on the way
    up to the mount), or None: no quota, or no cgroup filesystem to read (not Linux).

    ``root`` is where ``proc/`` and ``sys/`` are read from: ``/`` but in tests.
    """
    try:
        mounts = (root / "proc/self/mountinfo").read_text().splitlines()
        memberships = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in mounts:
        fields = line.split()  # id parent dev root mount-point options ... - type source options
        if "-" not in fields[5:] or len(fields) < fields.index("-") + 4:
            continue
        dash = fields.index("-")
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        if fstype == "cgroup2":
            own = _membership(memberships, None)
        elif fstype == "cgroup" and "cpu" in options:
            own = _membership(memberships, "cpu")
        else:
            continue
        if own is None:
            continue
        # The process's cgroup, seen from what this mount shows (a container sees only its own).
        mounted, mount_point = PurePosixPath(fields[3]), root / fields[4].lstrip("/")
        try:
            relative = PurePosixPath(own).relative_to(mounted)
        except ValueError:
            continue
        limit = _tightest(mount_point, relative, v2=fstype == "cgroup2")
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def _membership(lines: list[str], controller: str | None) -> str | None:
    """The cgroup path in ``/proc/self/cgroup``: v2's ``0::path`` (``controller`` None), or the
    v1 hierarchy whose controllers include ``controller``."""
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controller is None and hierarchy == "0" and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    return None


def _tightest(mount_point: Path, relative: PurePosixPath, *, v2: bool) -> float | None:
    """The smallest quota on ``relative`` and its parents below ``mount_point``."""
    limits = []
    parts = relative.parts
    for depth in range(len(parts), -1, -1):
        folder = mount_point.joinpath(*parts[:depth])
        limit = _quota_v2(folder) if v2 else _quota_v1(folder)
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def _quota_v2(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _quota_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None

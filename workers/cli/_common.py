"""Shared CLI helpers: the console, JSON output, waiting on jobs with a progress bar."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from workers import jobs
from workers.runtime import redis_client
from workers.store import UnknownId

console = Console()
err_console = Console(stderr=True)

TERMINAL = {"done", "failed", "skipped"}
# A job still queued after this long makes wait_for_job ask whether any worker consumes its queue.
NO_WORKER_CHECK_S = 5.0


@contextmanager
def known(argument: str) -> Iterator[None]:
    """An id that names nothing is bad usage (exit 2), as click makes a path that does not
    exist: exit 1 stays "failed" (for `jobs status` and `--wait`: the job failed), so a script
    can tell a failed job from a mistyped or expired id. ``argument``: its metavar, e.g. V1."""
    try:
        yield
    except UnknownId as err:
        raise typer.BadParameter(str(err), param_hint=f"'{argument}'") from None


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    return t


def wait_for_job(
    job_id: str, *, quiet: bool = False, poll_s: float = 1.0, timeout_s: float | None = None
) -> dict:
    """Follow the job record until it ends; a rich progress bar on stderr unless ``quiet``.

    The record is re-read whenever a worker changes it (``jobs.watching``), and every ``poll_s``
    in case a notification was lost.

    If the job is still queued after ``NO_WORKER_CHECK_S`` and no worker consumes its queue, say
    so once on stderr (and keep waiting: a worker may be started meanwhile).
    """
    r = redis_client()
    started = time.monotonic()
    deadline = None if timeout_s is None else started + timeout_s
    checked = False
    with (
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=err_console,
            disable=quiet,
            transient=False,
        ) as progress,
        jobs.watching(r, job_id) as changed,
    ):
        task = progress.add_task(job_id, total=None, detail="queued")
        while True:
            job = jobs.get_job(r, job_id)
            if job is None:
                raise ValueError(f"unknown job {job_id!r}; see `birthmark jobs list`")
            detail = job["status"]
            p = job.get("progress") or {}
            if "epoch" in p:
                auc = p.get("val_auc")
                at = (
                    f" (epoch {p['val_epoch']})"
                    if p.get("val_epoch") not in (None, p["epoch"])
                    else ""
                )
                detail = (
                    f"epoch {p['epoch']}/{p['epochs']} loss {p['train_loss']:.4f} "
                    f"val AUC {auc if auc is not None else 'n/a'}{at} ETA {p.get('eta_s', 0):.0f}s"
                )
            elif "stage" in p:
                detail = f"{job['status']}: {p['stage']}"
            progress.update(task, total=job["total"] or None, completed=job["done"], detail=detail)
            if job["status"] in TERMINAL:
                return job
            if not checked and job["status"] == "queued":
                if time.monotonic() - started >= NO_WORKER_CHECK_S:
                    checked = True
                    _warn_if_unconsumed(job)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
            wait_s = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            changed(max(wait_s, 0.0))


def _warn_if_unconsumed(job: dict) -> None:
    from workers.app import QUEUE_OF_KIND, consumers

    queue = QUEUE_OF_KIND.get(job["kind"])
    if queue is None or consumers(queue):
        return
    running = [
        j["id"]
        for j in jobs.list_jobs(redis_client(), limit=50)
        if j["status"] == "running" and QUEUE_OF_KIND.get(j["kind"]) == queue
    ]
    if running:  # its worker is busy with that job's task, so it could not answer
        err_console.print(
            f"[yellow]note:[/] job {job['id']} is queued behind running job {running[0]} "
            f"on the {queue!r} queue; waiting on."
        )
        return
    err_console.print(
        f"[yellow]warning:[/] job {job['id']} is still queued and no worker answered for the "
        f"{queue!r} queue: start one with `birthmark services up` (or `docker compose up`). "
        "A worker busy with a long task cannot answer; waiting on."
    )

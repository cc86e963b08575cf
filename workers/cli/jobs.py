"""`birthmark jobs`: list, status, results, resume, sweep."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from workers import jobs as jobstore
from workers import results
from workers.cli._common import console, err_console, print_json, table, wait_for_job
from workers.cli.score import ROW_FIELDS, write_rows
from workers.runtime import redis_client, store
from workers.sweeper import SCORING_KINDS

app = typer.Typer(help="Inspect, resume and sweep jobs.", no_args_is_help=True)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _get(job_id: str) -> dict:
    job = jobstore.get_job(redis_client(), job_id)
    if job is None:
        raise typer.BadParameter(  # bad usage (exit 2): see _common.known
            f"unknown job {job_id!r}; see `birthmark jobs list`", param_hint="'JOB_ID'"
        )
    return job


@app.command("list")
def list_(
    limit: int = typer.Option(20, min=1),
    kind: str | None = typer.Option(None, help="score, watch, train, pull, curate, curation-daily"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent jobs, newest first."""
    found = jobstore.list_jobs(redis_client(), limit=limit, kind=kind)
    if as_json:
        print_json(found)
        return
    rows = [
        [
            j["id"],
            j["kind"],
            j["status"],
            f"{j['done']}/{j['total']}",
            j["errors"],
            _when(j["created_at"]),
        ]
        for j in found
    ]
    console.print(
        table("jobs", ["job", "kind", "status", "progress", "errors", "created (UTC)"], rows)
    )


@app.command()
def status(
    job_id: str,
    wait: bool = typer.Option(False, "--wait", help="Follow with a progress bar until it ends"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One job: status, progress, errors, result."""
    job = _get(job_id)  # an unknown id is bad usage with --wait too (wait_for_job: failed)
    if wait:
        job = wait_for_job(job_id, quiet=as_json)
    if as_json:
        print_json(job)
        if job["status"] == "failed":  # the same exit code as the table
            raise typer.Exit(1)
        return
    rows = [[k, job[k]] for k in ("id", "kind", "status", "total", "done", "errors") if k in job]
    for k in ("progress", "message", "result"):
        if job.get(k):
            rows.append([k, job[k]])
    console.print(table(f"job {job_id}", ["field", "value"], rows))
    if job["status"] == "failed":
        raise typer.Exit(1)


@app.command("results")
def results_(
    job_id: str,
    out: Path | None = typer.Option(None, help="Write rows to FILE (.jsonl or .csv)"),
    errors_only: bool = typer.Option(False, "--errors", help="Only error rows"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines on stdout"),
) -> None:
    """The result rows of a scoring job (one per input); exit 1 if the job failed."""
    job = _get(job_id)
    rows = [
        r for r in results.read_rows(store(), job_id) if not errors_only or r["status"] == "error"
    ]
    if job["status"] != "done":  # the rows so far; say so rather than pass them off as all
        err_console.print(
            f"[yellow]job {job_id} is {job['status']}[/]: rows of {job.get('done', 0)} of "
            f"{job.get('total', 0)} inputs so far"
            + (f" ({job['message']})" if job.get("message") else "")
        )
    if out:
        write_rows(out, rows)
        console.print(f"{len(rows)} rows written to {out}")
    elif as_json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
    else:
        console.print(
            table(
                f"results of {job_id}", ROW_FIELDS, [[r.get(k) for k in ROW_FIELDS] for r in rows]
            )
        )
    if job["status"] == "failed":
        raise typer.Exit(1)


@app.command()
def resume(job_id: str, wait: bool = typer.Option(False, "--wait")) -> None:
    """Re-queue the batches of a scoring job that have no result part yet (safe to repeat)."""
    from workers.submit import queue_plan

    job = _get(job_id)
    if job["kind"] not in SCORING_KINDS:
        raise typer.BadParameter(
            f"{job_id} is a {job['kind']} job; only scoring jobs resume by batch"
        )
    st = store()
    r = redis_client()
    if job["status"] == "done" and results.read_summary(st, job_id) is not None:
        console.print(f"{job_id} is done: nothing to resume")
        return
    written = 0
    # Parts already in the store count as complete even if Redis lost the record of them; counting
    # their rows (once per batch) keeps the job's done/errors totals right.
    for obj in st.list(f"results/{job_id}/part-"):
        index = int(obj.key.rsplit("-", 1)[1].split(".")[0])
        rows = [json.loads(line) for line in st.get(obj.key).decode().splitlines() if line.strip()]
        jobstore.complete_batch(r, job_id, index, results.summarize_rows(rows))
        written += 1
    jobstore.update_job(r, job_id, status="running")
    queue_plan(job_id)
    console.print(f"resumed {job_id}: {written} batches already written")
    if wait:
        wait_for_job(job_id)


@app.command()
def sweep(
    confirm_s: float = typer.Option(5.0, min=0, help="Seconds between the two looks."),
    min_age_s: float | None = typer.Option(
        None,
        min=0,
        help="Skip jobs queued less than this many seconds ago.",
        show_default="BIRTHMARK_SWEEP_MIN_AGE_S",
    ),
) -> None:
    """Queue again the tasks of dead workers and the work the broker lost (the workers do this
    in turn every BIRTHMARK_SWEEP_INTERVAL_S; safe to repeat)."""
    from workers.tasks.sweep import sweep_now

    swept = sweep_now(min_age_s=min_age_s, confirm_s=confirm_s)
    if swept is None:
        err_console.print(
            "another sweep is running (a worker's or another `jobs sweep`): try again"
        )
        raise typer.Exit(1)
    orphans, found = swept
    for orphan in orphans:
        console.print(f"queued again: {orphan.task_id} (its worker {orphan.worker} is gone)")
    for lost in found:
        console.print(f"queued again: {lost.describe()}")
    if not found and not orphans:
        console.print("nothing lost: every unfinished job's work is queued or running")

"""`birthmark score`: queue a scoring job over S3 prefixes, store prefixes, folders or files."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress

from workers import results
from workers.cli._common import console, err_console, print_json, table, wait_for_job
from workers.jobs import find_job, new_job_id
from workers.runtime import redis_client, store
from workers.store import InvalidKey, S3Store, Store
from workers.submit import CLI_UPLOADS, lookup_metadata, request_key, submit_scoring

ROW_FIELDS = [
    "key",
    "status",
    "probability",
    "label",
    "model_id",
    "quality",
    "error_kind",
    "message",
]


def read_metadata_csv(path: Path) -> dict[str, dict[str, Any]]:
    """Rows keyed by file name (``file``, ``key``, ``image`` or ``isic_id`` column)."""
    try:
        return _read_metadata_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise typer.BadParameter(
            f"--metadata {path}: not a readable UTF-8 CSV file ({err})"
        ) from None


def _read_metadata_csv(path: Path) -> dict[str, dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        id_col = next(
            (c for c in ("file", "key", "image", "isic_id") if c in (reader.fieldnames or [])), None
        )
        if id_col is None:
            raise typer.BadParameter(
                f"{path} needs a column naming the image: file, key, image or isic_id "
                f"(found {reader.fieldnames})"
            )
        return {Path(row[id_col]).name: row for row in reader}


def folder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files, broken links) under ``folder``, sorted; hidden files and folders are left out.

    Linked folders are followed (each real folder once, so a link loop ends): a folder of
    photos linked in from elsewhere is part of the folder as the user sees it.
    """
    files: list[Path] = []
    broken: list[Path] = []
    seen: set[str] = set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            p = Path(top, name)
            if p.is_file():
                files.append(p)
            elif not p.exists():
                broken.append(p)
    return sorted(files), sorted(broken)


def _folder(prefix: str) -> str:
    """A store prefix given as a source names a folder: ``uploads/clinic-7`` is
    ``uploads/clinic-7/``, never also ``uploads/clinic-70/`` (as ``aws s3 cp --recursive``)."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _store_source(st: Store, src: str) -> str | None:
    """``"key"``, ``"prefix"`` (a folder, :func:`_folder`) or None: what ``src`` names in the
    store (None for a string that cannot be a key at all, such as a mistyped local path)."""
    try:
        if st.exists(src):
            return "key"
        return "prefix" if any(True for _ in st.list(_folder(src))) else None
    except InvalidKey:
        return None


def resolve_sources(
    st: Store, sources: list[str], job_id: str, metadata: dict[str, dict]
) -> tuple[list[dict], list[dict]]:
    """(items, prefixes): local files are uploaded under uploads/cli/<job_id>/ first."""
    items: list[dict] = []
    prefixes: list[dict] = []
    local: list[tuple[Path, str]] = []
    for src in sources:
        path = Path(src)
        if src.startswith("s3://"):
            if not isinstance(st, S3Store):
                raise typer.BadParameter(
                    f"{src}: the store is a local folder; set BIRTHMARK_STORE=s3://..."
                )
            bucket, _, key = src[5:].partition("/")
            if bucket != st.bucket or not key.startswith(st.prefix):
                raise typer.BadParameter(f"{src} is outside the configured store {st.uri}")
            rel = key[len(st.prefix) :]
            if rel.endswith("/") or not st.exists(rel):
                base = src[: len(src) - len(rel)]  # s3://bucket/store-prefix/
                prefixes.append({"prefix": _folder(rel), "display": base + _folder(rel)})
            else:
                items.append({"key": rel, "source": src})
        elif path.is_dir():
            found, broken = folder_files(path)
            local += [(p, str(p)) for p in found]
            if broken:
                err_console.print(
                    f"[yellow]warning:[/] skipped {len(broken)} broken link(s) in {src}: "
                    + ", ".join(str(p) for p in broken[:5])
                    + (" ..." if len(broken) > 5 else "")
                )
        elif path.is_file():
            local.append((path, str(path)))
        elif (kind := _store_source(st, src)) == "key":
            items.append({"key": src, "source": src})
        elif kind == "prefix":
            prefixes.append({"prefix": _folder(src), "display": _folder(src)})
        else:
            raise typer.BadParameter(
                f"{src!r} is not a file, folder, s3:// URI or store key/prefix"
            )
    # Metadata rows name the file as the user has it: local files are looked up by their own
    # name, not by the numbered key they are uploaded under.
    names = [item["key"] for item in items]
    if local:
        uploaded: dict[Path, str] = {}  # the same file given twice is one key: a duplicate_input
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("uploading", total=len(local))
            for i, (path, shown) in enumerate(local):
                real = path.resolve()
                key = uploaded.get(real)
                if key is None:
                    key = uploaded[real] = f"{CLI_UPLOADS}{job_id}/{i:05d}-{path.name}"
                    st.put(key, path.read_bytes())
                items.append({"key": key, "source": shown})
                names.append(path.name)
                progress.advance(task)
    for item, name in zip(items, names, strict=True):
        m = lookup_metadata(metadata, name) if metadata else None
        if m:
            item["metadata"] = m
    return items, prefixes


_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_out(path: Path) -> None:
    """Refuse an ``--out`` file name :func:`write_rows` cannot write (a usage error)."""
    if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise typer.BadParameter(f"--out {path}: use a .jsonl or .csv file name")
    if not path.parent.is_dir():
        raise typer.BadParameter(f"--out {path}: folder {path.parent} does not exist")


# Written by --out: the table's columns, then the photo's size, the store key and why metadata
# was set aside: every field of a result row.
OUT_FIELDS = [*ROW_FIELDS, "width", "height", "object_key", "warnings"]


def write_rows(path: Path, rows: list[dict]) -> None:
    """``.jsonl`` or ``.csv`` by extension; one row per input."""
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=OUT_FIELDS, extrasaction="ignore")
            w.writeheader()
            for row in rows:
                w.writerow({**row, "warnings": "; ".join(row.get("warnings") or [])})
    elif path.suffix.lower() in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({k: row.get(k) for k in OUT_FIELDS}, ensure_ascii=False) + "\n")
    else:
        raise typer.BadParameter(f"--out {path}: use a .jsonl or .csv file name")


def show_summary(summary: dict) -> None:
    rows = [["rows", summary["total"]], ["ok", summary["ok"]], ["errors", summary["errors"]]]
    rows += [[f"  error: {k}", v] for k, v in sorted(summary["errors_by_kind"].items())]
    rows += [[f"  label: {k}", v] for k, v in sorted(summary["labels"].items())]
    rows += [[f"  quality: {k}", v] for k, v in sorted(summary["quality"].items())]
    rows += [
        ["models", ", ".join(summary["model_ids"]) or "-"],
        ["seconds", summary.get("seconds")],
    ]
    console.print(table(f"job {summary['job_id']}", ["", "count"], rows))


def score(
    sources: list[str] = typer.Argument(
        None, help="s3://bucket/prefix, store prefix/key, folder or files"
    ),
    metadata: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="CSV of age, sex, site per file"
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait with a progress bar and print a summary"),
    out: Path | None = typer.Option(
        None, help="Write rows to FILE (.jsonl or .csv); implies --wait"
    ),
    job_id: str | None = typer.Option(
        None, help="Job id to use; resubmitting it queues nothing new"
    ),
    idempotency_key: str | None = typer.Option(None, help="Same key twice => one job"),
    watch: str | None = typer.Option(
        None, help="Score new objects under PREFIX every --interval seconds"
    ),
    interval: float = typer.Option(10.0, help="Seconds between --watch scans"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Queue a scoring job; every input ends as one result row (ok or error with a kind)."""
    if watch is not None:
        from workers.watcher import watch_prefix

        err_console.print(f"watching [bold]{watch}[/] every {interval:g}s (Ctrl-C to stop)")
        while True:
            job = watch_prefix(watch)
            if job:
                console.print(f"queued {job}")
            time.sleep(interval)
    if not sources:
        raise typer.BadParameter("give at least one SOURCE (or --watch PREFIX)")
    if job_id is not None and not _JOB_ID.fullmatch(job_id):
        raise typer.BadParameter(
            f"--job-id {job_id!r}: use letters, digits, '.', '_' and '-' (at most 128)"
        )
    if out is not None:
        check_out(out)  # a usage error, before anything is uploaded or queued
    st = store()
    meta = read_metadata_csv(metadata) if metadata else {}
    existing = find_job(redis_client(), job_id=job_id, idempotency_key=idempotency_key)
    if existing is not None and st.exists(request_key(existing)):
        # Already submitted: upload nothing (a local file would land in, or overwrite an input
        # of, that job's uploads/cli/<job_id>/ and never be scored). submit_scoring still
        # queues a job whose submitter died before queueing it.
        job_id, items, prefixes = existing, [], []
    else:
        job_id = existing or job_id or new_job_id("score")
        items, prefixes = resolve_sources(st, list(sources), job_id, meta)
    job_id, created = submit_scoring(
        items=items,
        prefixes=prefixes,
        job_id=job_id,
        idempotency_key=idempotency_key,
        metadata=meta,
    )
    if not (wait or out):
        if as_json:
            print_json({"job_id": job_id, "created": created})
        else:
            console.print(f"{'queued' if created else 'already submitted'}: [bold]{job_id}[/]")
        return
    job = wait_for_job(job_id, quiet=as_json)
    if job["status"] != "done":
        if as_json:  # a script reads why on stdout, as for a job that finished
            print_json(job)
        err_console.print(f"[red]job {job_id} {job['status']}[/]: {job.get('message', '')}")
        raise typer.Exit(1)
    summary = results.read_summary(st, job_id)
    if out:
        write_rows(out, list(results.read_rows(st, job_id)))
    if as_json:
        print_json(summary)
    else:
        show_summary(summary)
        console.print(
            f"results: {st.uri.rstrip('/')}/results/{job_id}/"
            + (f"  rows written to {out}" if out else "")
        )

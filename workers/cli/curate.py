"""`birthmark curate`: pull from ISIC, import a local set, publish and compare curated versions."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

import curation
from workers.cli._common import console, err_console, known, print_json, table, wait_for_job
from workers.runtime import store
from workers.submit import submit_task_job

# workers.curating and workers.pulls (pandas and more, ~2 s) are imported by the commands that
# use them: every `birthmark` command imports this module (``curation`` loads lazily).
app = typer.Typer(help="Curation: ISIC pulls, imports, curated versions.", no_args_is_help=True)


def _collections(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"\d+(,\d+)*", value):
        raise typer.BadParameter("--collections takes comma-separated collection ids, e.g. 249,66")
    return value


@app.command()
def pull(
    search: str = typer.Option("", help="ISIC search, e.g. 'image_type:\"clinical: close-up\"'"),
    limit: int = typer.Option(100, min=1, help="At most this many images"),
    collections: str | None = typer.Option(None, callback=_collections, help="Collection ids"),
    wait: bool = typer.Option(False, "--wait"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue an isic-cli download into raw/isic/<pull_id>/ (skips images already stored)."""
    from workers.tasks.curation import pull as pull_task

    params = {"search": search, "limit": limit, "collections": collections}
    job_id, _ = submit_task_job(pull_task, kind="pull", params=params, job_id=_new("pull"))
    _finish(job_id, wait, as_json)


def _new(kind: str) -> str:
    from workers.jobs import new_job_id

    return new_job_id(kind)


def _finish(job_id: str, wait: bool, as_json: bool) -> None:
    if not wait:
        print_json({"job_id": job_id}) if as_json else console.print(f"queued [bold]{job_id}[/]")
        return
    job = wait_for_job(job_id, quiet=as_json)
    if as_json:
        print_json(job)
    elif job["status"] == "done":
        console.print(
            table(
                job_id,
                ["field", "value"],
                [[k, v] for k, v in (job.get("result") or {}).items() if not isinstance(v, list)],
            )
        )
    if job["status"] != "done":
        err_console.print(f"[red]{job_id} {job['status']}[/]: {job.get('message', '')}")
        raise typer.Exit(1)


@app.command("import")
def import_(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of images"),
    manifest: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="CSV (default FOLDER/manifest.csv, else FOLDER/metadata.csv): birthmark or "
        "isic-cli columns",
    ),
    licence: list[str] = typer.Option(
        None,
        "--licence",
        help="Licence for rows the manifest leaves without one: SOURCE=LICENCE (by the source "
        "column) or LICENCE (all others); repeatable, e.g. --licence HAM10000=CC-BY-NC",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Bring a local labelled set into the store as a pull (idempotent)."""
    from workers import pulls

    try:
        licences = curation.parse_licence_rules(licence or [])
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--licence") from None
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        disable=as_json,
    ) as progress:
        task = progress.add_task("import", total=None)
        record, created = pulls.import_folder(
            store(),
            folder,
            manifest=manifest,
            licences=licences,
            on_image=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if as_json:
        print_json({**record, "created": created})
    else:
        verb = "imported" if created else "already imported"
        console.print(f"{verb} as pull [bold]{record['pull_id']}[/]: {record['counts']}")


@app.command()
def run(
    pull_ids: list[str] = typer.Option(None, "--pull", help="Only these pulls (default: all)"),
    wait: bool = typer.Option(True, "--wait/--no-wait"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Filter -> publish a new curated version (prints version, counts, review backlog)."""
    from workers import curating
    from workers.tasks.curation import run as run_task

    if pull_ids:  # here, not later in the worker
        with known("--pull"):
            curating.complete_pull_ids(store(), pull_ids)
    job_id, _ = submit_task_job(
        run_task, kind="curate", params={"pulls": pull_ids or None}, job_id=_new("curate")
    )
    _finish(job_id, wait, as_json)


@app.command("pulls")
def pulls_(as_json: bool = typer.Option(False, "--json")) -> None:
    """Complete pulls in the store."""
    from workers import pulls

    found = pulls.list_pulls(store())
    if as_json:
        print_json(found)
        return
    rows = [
        [
            p["pull_id"],
            p["kind"],
            p.get("query", {}).get("search", p.get("source_folder", "")),
            p["counts"],
        ]
        for p in found
    ]
    console.print(table("pulls", ["pull", "kind", "query/source", "counts"], rows))


@app.command()
def versions(as_json: bool = typer.Option(False, "--json")) -> None:
    """Published curated versions, oldest first; LATEST marked."""
    from workers import curating

    st = store()
    found = curating.list_versions(st)
    latest = st.read_pointer(curating.LATEST_KEY)
    if as_json:
        print_json(found)
        return
    rows = [
        [
            "*" if v["version"] == latest else "",
            v["version"],
            v.get("parent"),
            v.get("rows"),
            v.get("by_verdict"),
            v.get("review_backlog"),
        ]
        for v in found
    ]
    console.print(
        table(
            "curated versions", ["", "version", "parent", "images", "verdicts", "to review"], rows
        )
    )


@app.command()
def diff(v1: str, v2: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Added, removed and changed-verdict images between two versions."""
    from workers.training_run import load_manifest

    st = store()
    with known("V1"):
        _, old = load_manifest(st, v1)
    with known("V2"):
        _, new = load_manifest(st, v2)
    changes = curation.diff_manifests(old, new)
    if as_json:
        print_json(changes.to_dict("records"))
        return
    console.print(
        table(f"{v1} -> {v2}", list(changes.columns), changes.astype(str).values.tolist())
    )
    console.print(changes["change"].value_counts().to_dict() if len(changes) else "no differences")

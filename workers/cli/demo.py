"""`birthmark demo`: the whole pipeline on the embedded default, offline, in a few minutes."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import typer
from PIL import Image

from curation.synthetic import jpeg_bytes, make_lesion_image, write_isic_sample
from workers import results, services
from workers.cli._common import console, wait_for_job
from workers.cli.score import show_summary
from workers.runtime import redact_url, redis_url, store
from workers.settings import get_settings
from workers.submit import submit_scoring, submit_task_job


def broken_uploads() -> dict[str, bytes]:
    """Uploads as they go wrong in the field: each must end as an error row, not a crash."""
    good = jpeg_bytes(make_lesion_image(np.random.default_rng(99), malignant=False, style="phone"))
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 150, 120)).save(buf, format="PNG")
    return {
        "empty.jpg": b"",
        "truncated.jpg": good[: len(good) // 3],
        "notes.jpg": b"this is a text file with a .jpg name\n",
        "page.jpeg": b"<!doctype html><html><body>502 Bad Gateway</body></html>",
        "tiny.png": buf.getvalue(),  # decodes: scored, quality says too_small
    }


def _step(title: str) -> None:
    console.rule(f"[bold]{title}")


def demo(
    images: int = typer.Option(240, min=40, help="Size of the generated ISIC-format sample"),
    uploads: int = typer.Option(50, min=10, help="Uploads to score (a few of them broken)"),
    epochs: int = typer.Option(4, min=1, help="Training epochs for the demo model"),
    keep_services: bool = typer.Option(True, help="Leave redis + workers running afterwards"),
) -> None:
    """Generate a sample, curate it, train and publish a model, then score uploads via the queue."""
    from workers import pulls  # pandas: only for the demo, not every command

    settings = get_settings()
    started = time.monotonic()
    _step("1/6 services (embedded redis + workers)")
    pids = services.services_up(settings, beat=False, redis_url=redis_url())
    console.print(
        f"redis {redact_url(redis_url())}; workers {', '.join(f'{k}={v}' for k, v in pids.items())}"
    )
    st = store()
    console.print(f"store: {st.uri}")

    _step("2/6 a small ISIC-format sample, imported as a pull")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = write_isic_sample(Path(tmp), n=images, seed=7)
        record, created = pulls.import_folder(st, Path(tmp), manifest=csv_path)
    console.print(
        f"pull {record['pull_id']} ({'new' if created else 'already imported'}): {record['counts']}"
    )

    _step("3/6 curation: phone-likeness, dedupe, licences, grouped splits -> a curated version")
    from workers.tasks.curation import run as curate_task

    job_id, _ = submit_task_job(curate_task, kind="curate", params={"pulls": [record["pull_id"]]})
    job = wait_for_job(job_id)
    _require(job)
    summary = job["result"]
    console.print(
        f"version {summary['version']}: {summary['by_verdict']}, splits {summary['by_split']}"
    )

    _step("4/6 training a small model (the champion when it is the first or better)")
    from workers.tasks.train import run as train_task

    job_id, _ = submit_task_job(
        train_task,
        kind="train",
        params={"data": summary["version"], "epochs": epochs, "image_size": 64, "trigger": "demo"},
    )
    job = wait_for_job(job_id)
    _require(job)
    res = job["result"]
    console.print(
        f"model {res['model_id']}: test ROC AUC {res['metrics']['overall']['roc_auc']:.3f}; "
        + ("promoted" if res["promoted"] else "challenger")
        + f" ({res['reason']})"
    )

    _step(f"5/6 {uploads} uploads into the store (some broken)")
    prefix = f"uploads/demo-{time.strftime('%Y%m%d-%H%M%S')}/"
    rng = np.random.default_rng(int(time.time()))
    broken = broken_uploads()
    for i in range(uploads - len(broken)):
        style = "phone" if i % 2 else "dermoscopic"
        img = make_lesion_image(
            rng, malignant=bool(rng.random() < 0.4), style=style, size=(1024, 768)
        )
        st.put(f"{prefix}photo-{i:03d}.jpg", jpeg_bytes(img, quality=88))
    for name, data in broken.items():
        st.put(prefix + name, data)
    console.print(f"{uploads} objects under {prefix}")

    _step("6/6 scoring through the queue")
    job_id, _ = submit_scoring(prefixes=[{"prefix": prefix, "display": prefix}])
    job = wait_for_job(job_id)
    _require(job)
    show_summary(results.read_summary(st, job_id))
    console.print(
        f"results: {st.uri.rstrip('/')}/results/{job_id}/  (`birthmark jobs results {job_id}`)"
    )
    console.print(f"demo finished in {time.monotonic() - started:.0f} s")
    if not keep_services:
        services.services_down(settings)
    else:
        console.print("services are still running: `birthmark services down` stops them")


def _require(job: dict) -> None:
    if job["status"] != "done":
        console.print(f"[red]{job['id']} {job['status']}[/]: {job.get('message', '')}")
        raise typer.Exit(1)

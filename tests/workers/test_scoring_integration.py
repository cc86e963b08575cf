"""Queued scoring end to end: real redis-server, real S3 HTTP server (moto), real worker process."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import reset_caches
from tests.workers.helpers import broken_uploads, good_jpeg, publish_tiny_champion

pytestmark = pytest.mark.integration
MAX_BYTES = 2 * 1024 * 1024


def _wait(job_id: str, timeout: float = 120.0) -> dict:
    """Until the job ends, by the same polling `birthmark ... --wait` uses."""
    from workers.cli._common import wait_for_job

    return wait_for_job(job_id, quiet=True, timeout_s=timeout)


def _run_fifty(env: dict, start_worker) -> None:
    from workers import results
    from workers.runtime import store
    from workers.submit import submit_scoring

    st = store()
    model_id = publish_tiny_champion(st)
    broken = broken_uploads(MAX_BYTES)
    for i in range(50 - len(broken)):
        st.put(f"uploads/batch1/img-{i:03d}.jpg", good_jpeg(i))
    for name, (data, _) in broken.items():
        st.put(f"uploads/batch1/{name}", data)
    start_worker(
        {**env, "BIRTHMARK_MAX_UPLOAD_BYTES": str(MAX_BYTES), "BIRTHMARK_SCORE_BATCH_SIZE": "16"}
    )

    job_id, created = submit_scoring(
        prefixes=[{"prefix": "uploads/batch1/", "display": "uploads/batch1/"}],
        job_id=f"job-fifty-{uuid.uuid4().hex[:8]}",
    )
    assert created
    job = _wait(job_id)
    assert job["status"] == "done", job
    rows = list(results.read_rows(st, job_id))
    assert len(rows) == 50
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 44
    assert all(0.0 <= r["probability"] <= 1.0 and r["model_id"] == model_id for r in ok)
    assert all(r["label"] in ("benign", "malignant") and r["quality"] for r in ok)
    kinds = {r["key"].rsplit("/", 1)[1]: r["error_kind"] for r in rows if r["status"] == "error"}
    assert kinds == {name: kind for name, (_, kind) in broken.items()}
    summary = results.read_summary(st, job_id)
    assert (summary["total"], summary["ok"], summary["errors"]) == (50, 44, 6)
    assert sum(summary["errors_by_kind"].values()) == 6
    assert job["done"] == 50 and job["errors"] == 6
    parts_before = sorted(o.key for o in st.list(f"results/{job_id}/"))

    # Resubmitting the same job id queues nothing and duplicates nothing.
    again, created = submit_scoring(
        prefixes=[{"prefix": "uploads/batch1/", "display": "x"}], job_id=job_id
    )
    assert (again, created) == (job_id, False)
    time.sleep(1.0)
    assert len(list(results.read_rows(st, job_id))) == 50
    assert sorted(o.key for o in st.list(f"results/{job_id}/")) == parts_before


def test_fifty_uploads_on_s3(s3_env, start_worker):
    _run_fifty(s3_env, start_worker)


def test_fifty_uploads_on_local_store(env, start_worker):
    _run_fifty(env, start_worker)


def test_watcher_scores_each_upload_once(s3_env, start_worker):
    from workers import results
    from workers.runtime import store
    from workers.watcher import watch_prefix

    st = store()
    publish_tiny_champion(st)
    start_worker(s3_env)
    for i in range(10):
        st.put(f"uploads/app/{i:02d}.jpg", good_jpeg(i))
    first = watch_prefix("uploads/")
    second = watch_prefix("uploads/")
    assert first is not None and second is None
    _wait(first)
    rows = list(results.read_rows(st, first))
    assert sorted(r["key"] for r in rows) == [f"uploads/app/{i:02d}.jpg" for i in range(10)]
    # New photo later: only it is scored.
    st.put("uploads/app/late.jpg", good_jpeg(99))
    third = watch_prefix("uploads/")
    _wait(third)
    assert [r["key"] for r in results.read_rows(st, third)] == ["uploads/app/late.jpg"]
    reset_caches()

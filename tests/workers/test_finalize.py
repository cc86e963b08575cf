"""Finalizing a scoring job: the summary counts every row, from the batches' kept summaries, the
rows in hand, or (when a summary is missing) the parts read back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import reset_caches
from tests.workers.helpers import good_jpeg, publish_tiny_champion


@pytest.fixture
def own_broker(env, monkeypatch, private_redis) -> Iterator[None]:
    """``env`` on a redis-server of its own: the plan and batch messages queued here never run."""
    monkeypatch.setenv("BIRTHMARK_REDIS_URL", private_redis.url)
    reset_caches()
    yield
    reset_caches()


@pytest.mark.parametrize(
    ("batch_size", "summaries_lost", "part_lists"), [(8, False, 0), (2, False, 0), (2, True, 1)]
)
def test_summary_counts_every_row_without_reading_parts_back(
    own_broker, monkeypatch, batch_size, summaries_lost, part_lists
):
    from workers import jobs, results, sweeper
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring
    from workers.tasks import score

    monkeypatch.setenv("BIRTHMARK_SCORE_BATCH_SIZE", str(batch_size))
    st = store()
    publish_tiny_champion(st)
    for i in range(3):
        st.put(f"uploads/f/{i}.jpg", good_jpeg(i))
    items = [{"key": f"uploads/f/{i}.jpg", "source": f"{i}.jpg"} for i in range(3)]
    items.append({"key": "uploads/f/missing.jpg", "source": "missing.jpg"})
    job_id, _ = submit_scoring(items=items)

    listed: list[str] = []
    real_list = type(st).list
    monkeypatch.setattr(
        type(st), "list", lambda self, prefix="": listed.append(prefix) or real_list(self, prefix)
    )
    batches = score.plan.run(job_id)  # in process; a one-batch job is scored inline
    if batches > 1:  # the queued batch tasks' bodies, as a worker runs them; the last finalizes
        for index, planned in enumerate(json.loads(st.get(sweeper.plan_key(job_id)))):
            if summaries_lost:  # e.g. parts recorded by an older worker: read the parts back
                redis_client().delete(f"birthmark:job:{job_id}:summaries")
            score.score_and_record(job_id, index, planned)

    listed_parts = [p for p in listed if p.startswith(f"results/{job_id}/part-")]
    assert len(listed_parts) == part_lists
    job = jobs.get_job(redis_client(), job_id)
    assert job["status"] == "done"
    summary = results.read_summary(st, job_id)
    rows = list(results.read_rows(st, job_id))
    assert (
        (summary["total"], summary["ok"], summary["errors"])
        == (4, 3, 1)
        == (
            len(rows),
            sum(r["status"] == "ok" for r in rows),
            sum(r["status"] == "error" for r in rows),
        )
    )


def test_merged_batch_summaries_equal_the_summary_of_all_rows():
    from workers.results import merge_summaries, summarize_rows

    def ok(label, quality, model="m-1"):
        return {"status": "ok", "label": label, "quality": quality, "model_id": model}

    def error(kind):
        return {"status": "error", "error_kind": kind}

    parts = [
        [ok("benign", "good"), error("missing"), ok("malignant", "blurry")],
        [error("not_an_image"), error("missing")],
        [ok("benign", "good", "m-2")],
    ]
    merged = merge_summaries(summarize_rows(rows) for rows in parts)
    assert merged == summarize_rows([row for rows in parts for row in rows])
    assert merged["errors_by_kind"] == {"missing": 2, "not_an_image": 1}
    assert merged["model_ids"] == ["m-1", "m-2"]
    assert merge_summaries([]) == summarize_rows([])

"""A scoring job straddling a promotion: rows from both models, each naming its scorer."""

from __future__ import annotations

import time

import pytest

from tests.workers.helpers import good_jpeg, publish_tiny_champion

pytestmark = pytest.mark.integration


def test_scoring_switches_champion_between_batches(s3_env, start_worker):
    from workers import jobs, registry, results
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring

    st = store()
    first = publish_tiny_champion(st, seed=1)
    for i in range(40):
        st.put(f"uploads/swap/{i:03d}.jpg", good_jpeg(i, size=(640, 480)))
    import torch

    import models

    torch.manual_seed(2)
    weights, card = models.dump_checkpoint(models.build_model("resnet10_image"), {"image_size": 64})
    second = registry.publish_model(st, weights, card)  # published now, promoted mid-job
    start_worker({**s3_env, "BIRTHMARK_SCORE_BATCH_SIZE": "4"}, "score")
    job_id, _ = submit_scoring(prefixes=[{"prefix": "uploads/swap/"}])
    deadline = time.monotonic() + 120
    while not list(st.list(f"results/{job_id}/part-")):
        assert time.monotonic() < deadline, "no batch finished"
        time.sleep(0.01)
    registry.promote(st, second, reason="hot swap test")
    while (job := jobs.get_job(redis_client(), job_id))["status"] != "done":
        assert time.monotonic() < deadline + 120, job
        time.sleep(0.2)
    rows = list(results.read_rows(st, job_id))
    assert len(rows) == 40
    by_batch: dict[int, set[str]] = {}
    for row in rows:
        by_batch.setdefault(row["batch"], set()).add(row["model_id"])
    assert all(len(ids) == 1 for ids in by_batch.values()), "a batch mixes models"
    sequence = [next(iter(by_batch[b])) for b in sorted(by_batch)]
    assert sequence[0] == first and sequence[-1] == second
    # The worker runs two batches at a time, so the two around the promotion may finish either
    # way round; each still scored with one model, and every later batch with the new one.
    switch = sequence.index(second)
    assert all(model_id == second for model_id in sequence[switch + 2 :])
    assert set(results.read_summary(st, job_id)["model_ids"]) == {first, second}

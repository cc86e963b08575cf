"""Training through the `train` queue: a real worker, curated data, registry and promotion."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from tests.faults._support import wait_for

pytestmark = pytest.mark.integration


def _wait(job_id: str, timeout: float = 300.0) -> dict:
    """Until the job ends, by the same polling `birthmark ... --wait` uses."""
    from workers.cli._common import wait_for_job

    return wait_for_job(job_id, quiet=True, timeout_s=timeout)


@pytest.fixture
def curated(env, tmp_path):
    """A curated version of a generated ISIC-format sample, published in-process."""
    from curation.synthetic import write_isic_sample
    from workers import curating, pulls
    from workers.runtime import store

    folder = tmp_path / "sample"
    write_isic_sample(folder, n=120, seed=5)
    pulls.import_folder(store(), folder, manifest=folder / "metadata.csv")
    return curating.publish_version(store())["version"]


def test_train_promote_registry_and_rollback(env, curated, start_worker):
    from workers.cli import app
    from workers.runtime import store

    start_worker({**env, "BIRTHMARK_TRAIN_IMAGE_SIZE": "32"}, "train")
    runner = CliRunner()
    res = runner.invoke(
        app, ["train", "--epochs", "2", "--arch", "resnet10_image", "--wait", "--json"]
    )
    assert res.exit_code == 0, res.output
    job = json.loads(res.stdout)
    assert job["status"] == "done", job
    first = job["result"]
    assert first["promoted"] and first["reason"] == "first model"
    assert first["data_version"] == curated
    assert job["progress"]["epoch"] == 2 and "val_auc" in job["progress"]
    st = store()
    assert st.read_pointer("models/CHAMPION") == first["model_id"]
    # Done: its ~80 MB resume checkpoint is gone (deleted just after "done" is written, which is
    # what --wait returns on), and a redelivery does not train again.
    wait_for(
        lambda: not st.exists(f"models/runs/{job['id']}/resume.bin"),
        timeout=30,
        what="the resume checkpoint deleted",
    )
    from workers.tasks.train import run

    assert run(job["id"])["model_id"] == first["model_id"]  # the result recorded, no new model
    card = json.loads(st.get(f"models/{first['model_id']}/card.json"))
    for field in ("sha256", "data_version", "metrics", "code_version", "train_config"):
        assert field in card
    assert 0.0 <= card["metrics"]["overall"]["roc_auc"] <= 1.0
    assert {"overall", "phone_like", "not_phone_like"} <= card["metrics"].keys()
    low, high = card["metrics"]["overall"]["roc_auc_ci"]  # NaN if the tiny test split has one class
    assert (math.isnan(low) and math.isnan(high)) or 0.0 <= low <= high <= 1.0
    assert b"data:image/png;base64" in st.get(f"models/{first['model_id']}/report.html")

    assert card["train_config"]["seed"] == 0  # the default
    # BIRTHMARK_TRAIN_TIME_BUDGET_MIN (27) reaches the run; two quick epochs fit in it.
    assert card["train_config"]["time_budget_s"] == 27 * 60 and card["epochs_run"] == 2

    # A second run with other settings: promoted only if it beats the champion on the same holdout.
    args = ["--epochs", "1", "--arch", "resnet10_multimodal", "--seed", "3", "--wait", "--json"]
    res = runner.invoke(app, ["train", *args])
    second = json.loads(res.stdout)["result"]
    assert json.loads(st.get(f"models/{second['model_id']}/card.json"))["train_config"]["seed"] == 3
    assert second["model_id"] != first["model_id"]
    assert second["champion_before"] == first["model_id"]
    assert ("beats" in second["reason"]) == second["promoted"]
    paired = second["paired_auc"]  # how sure the holdout is about the ranking, recorded with it
    assert set(paired) == {"difference", "ci", "share_better"}
    if not math.isnan(paired["difference"]):
        assert paired["ci"][0] <= paired["ci"][1] and 0.0 <= paired["share_better"] <= 1.0
        assert "paired bootstrap" in second["reason"]
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert {m["model_id"] for m in listed} == {first["model_id"], second["model_id"]}

    # Manual promotion and rollback.
    other = second["model_id"] if not second["promoted"] else first["model_id"]
    current = st.read_pointer("models/CHAMPION")
    assert runner.invoke(app, ["models", "promote", other]).exit_code == 0
    assert st.read_pointer("models/CHAMPION") == other
    assert runner.invoke(app, ["models", "rollback"]).exit_code == 0
    assert st.read_pointer("models/CHAMPION") == current


def test_concurrent_runs_one_trains_other_skipped(env, curated):
    """The Redis lock: a second run while one holds it is reported skipped, not run."""
    from workers import jobs
    from workers.runtime import redis_client

    r = redis_client()
    assert jobs.acquire_lock(r, "train", "run-a", ttl_s=60)
    assert not jobs.acquire_lock(r, "train", "run-b", ttl_s=60)
    assert jobs.acquire_lock(r, "train", "run-a", ttl_s=60)  # the same run, redelivered
    jobs.release_lock(r, "train", "run-b")  # not the owner: no effect
    assert r.get("birthmark:lock:train") == "run-a"
    jobs.release_lock(r, "train", "run-a")
    assert r.get("birthmark:lock:train") is None

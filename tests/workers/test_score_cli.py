"""`birthmark score` / `birthmark jobs` on a real redis-server and a local store, no worker:
what is uploaded and queued, what is refused as bad usage, and the watcher's share."""

from __future__ import annotations

import json
import os
import time

import pytest
from typer.testing import CliRunner

from tests.workers.helpers import good_jpeg


def _cli(*args: str):
    from workers.cli import app

    return CliRunner().invoke(app, list(args))


def _request(job_id: str) -> dict:
    from workers.runtime import store
    from workers.submit import request_key

    return json.loads(store().get(request_key(job_id)))


def _uploads(job_id: str) -> list[str]:
    from workers.runtime import store

    return [o.key for o in store().list(f"uploads/cli/{job_id}/")]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(good_jpeg(1))
    (folder / "sub" / "b.jpg").write_bytes(good_jpeg(2))
    return folder


def test_metadata_csv_reaches_local_files_by_their_own_names(env, photos, tmp_path):
    csv = tmp_path / "meta.csv"
    csv.write_text("file,age,sex,site\na.jpg,70,male,back\nsub/b.jpg,35,female,face\n")
    result = _cli("score", str(photos), "--metadata", str(csv), "--job-id", "meta-1")
    assert result.exit_code == 0, result.output
    items = {os.path.basename(i["source"]): i for i in _request("meta-1")["items"]}
    assert items["a.jpg"]["metadata"]["age"] == "70"
    assert items["b.jpg"]["metadata"]["site"] == "face"


def test_a_metadata_file_that_is_not_a_csv_is_bad_usage(env, photos, tmp_path):
    binary = tmp_path / "meta.csv"
    binary.write_bytes(good_jpeg(4))
    result = _cli("score", str(photos), "--metadata", str(binary))
    assert result.exit_code == 2, result.output
    assert "UTF-8" in "".join(c for c in result.output if c.isalnum() or c == "-")
    missing = _cli("score", str(photos), "--metadata", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2


def test_a_store_prefix_names_a_folder_not_every_key_that_starts_with_it(env):
    from workers.runtime import store

    store().put("uploads/clinic-7/a.jpg", good_jpeg(1))
    store().put("uploads/clinic-70/b.jpg", good_jpeg(2))
    assert _cli("score", "uploads/clinic-7", "--job-id", "folder-1").exit_code == 0
    assert [p["prefix"] for p in _request("folder-1")["prefixes"]] == ["uploads/clinic-7/"]
    assert _cli("score", "uploads/clinic", "--job-id", "folder-2").exit_code == 2  # no such folder


def test_the_same_local_file_twice_is_one_upload_and_a_duplicate_key(env, photos):
    a = str(photos / "a.jpg")
    result = _cli("score", a, str(photos), a, "--job-id", "dup-1")
    assert result.exit_code == 0, result.output
    items = _request("dup-1")["items"]
    assert len(items) == 4  # a, a (folder), sub/b, a: one row each
    assert len(_uploads("dup-1")) == 2
    assert len({i["key"] for i in items if i["source"].endswith("a.jpg")}) == 1  # plan marks it


def test_resubmitting_a_job_id_uploads_nothing_and_leaves_its_inputs_alone(env, photos, tmp_path):
    from workers.runtime import store

    assert _cli("score", str(photos), "--job-id", "same-1").exit_code == 0
    before = {k: store().get(k) for k in _uploads("same-1")}
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"not the same photo")  # same name as an input of same-1
    (other / "new.jpg").write_bytes(good_jpeg(3))
    result = _cli("score", str(other), "--job-id", "same-1")
    assert result.exit_code == 0 and "already submitted" in result.output
    assert {k: store().get(k) for k in _uploads("same-1")} == before
    assert len(_request("same-1")["items"]) == 2


def test_the_same_idempotency_key_twice_uploads_once(env, photos):
    first = _cli("score", str(photos), "--idempotency-key", "k-1", "--json")
    second = _cli("score", str(photos), "--idempotency-key", "k-1", "--json")
    assert first.exit_code == second.exit_code == 0
    job_id = json.loads(first.stdout)["job_id"]
    assert json.loads(second.stdout) == {"job_id": job_id, "created": False}
    from workers.runtime import store

    assert {o.key.split("/")[2] for o in store().list("uploads/cli/")} == {job_id}


@pytest.mark.parametrize(
    "args",
    [
        ["--out", "rows.txt"],
        ["--out", "no/such/folder/rows.csv"],
        ["--job-id", "../evil"],
        ["--job-id", "a/b"],
    ],
)
def test_bad_usage_exits_2_before_anything_is_uploaded_or_queued(env, photos, args):
    from workers import jobs
    from workers.runtime import redis_client, store

    before = jobs.list_jobs(redis_client(), limit=10_000)
    result = _cli("score", str(photos), *args)
    assert result.exit_code == 2, result.output
    assert jobs.list_jobs(redis_client(), limit=10_000) == before
    assert list(store().list("uploads/")) == []


@pytest.mark.parametrize("typo", ["/no/such/photo.jpg", "../no/such/photo.jpg"])
def test_a_mistyped_local_path_is_bad_usage_not_a_key_error(env, typo):
    result = _cli("score", typo)
    assert result.exit_code == 2
    assert "is not a file, folder" in result.output


def test_linked_folders_are_followed_and_broken_links_named(env, photos, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c.jpg").write_bytes(good_jpeg(4))
    (photos / "linked").symlink_to(elsewhere)
    (photos / "loop").symlink_to(photos)
    (photos / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    result = _cli("score", str(photos), "--job-id", "links-1")
    assert result.exit_code == 0, result.output
    assert "gone.jpg" in result.output
    names = sorted(os.path.basename(i["source"]) for i in _request("links-1")["items"])
    assert names == ["a.jpg", "b.jpg", "c.jpg"]


def test_the_watcher_leaves_cli_uploads_to_their_own_job(env, photos):
    from workers.runtime import store
    from workers.watcher import watch_prefix

    assert _cli("score", str(photos), "--job-id", "cli-1").exit_code == 0
    store().put("uploads/app/x.jpg", good_jpeg(5))
    job_id = watch_prefix("uploads/")
    assert [i["key"] for i in _request(job_id)["items"]] == ["uploads/app/x.jpg"]
    assert watch_prefix("uploads/") is None


def test_the_watchers_claims_keep_only_uploads_inside_its_window(env):
    from workers.runtime import redis_client, store
    from workers.watcher import GRACE_S, watch_prefix

    st, r = store(), redis_client()
    then = time.time() - 3 * GRACE_S
    st.put("uploads/app/old.jpg", good_jpeg(5))
    os.utime(st.root / "uploads/app/old.jpg", (then, then))
    first = watch_prefix("uploads/")
    claims = "birthmark:watch:claims:uploads/"
    assert r.hkeys(claims) == ["uploads/app/old.jpg"]
    assert not r.exists(f"birthmark:watch:job:{first}")  # queued: its recovery list is gone
    st.put("uploads/app/new.jpg", good_jpeg(6))  # now: the cursor moves past old.jpg's window
    second = watch_prefix("uploads/")
    assert [i["key"] for i in _request(second)["items"]] == ["uploads/app/new.jpg"]
    assert watch_prefix("uploads/") is None  # old.jpg is not scored again, new.jpg is claimed
    assert r.hkeys(claims) == ["uploads/app/new.jpg"]


def test_a_watcher_pass_that_died_after_claiming_is_queued_by_the_next(env):
    from workers import jobs
    from workers.runtime import redis_client, store
    from workers.watcher import watch_prefix

    st, r = store(), redis_client()
    st.put("uploads/app/x.jpg", good_jpeg(5))
    # What a pass leaves when it dies between claiming x.jpg and submitting the job for it.
    job_id = jobs.new_job_id("watch")
    r.hset("birthmark:watch:claims:uploads/", "uploads/app/x.jpg", job_id)
    r.rpush(f"birthmark:watch:job:{job_id}", "uploads/app/x.jpg")
    r.sadd("birthmark:watch:pending:uploads/", job_id)
    assert watch_prefix("uploads/") is None  # nothing new: x.jpg is claimed by the dead pass
    assert [i["key"] for i in _request(job_id)["items"]] == ["uploads/app/x.jpg"]
    assert jobs.get_job(r, job_id)["kind"] == "watch"
    assert not r.smembers("birthmark:watch:pending:uploads/")
    assert not r.exists(f"birthmark:watch:job:{job_id}")


def test_jobs_status_json_exits_1_for_a_failed_job_like_the_table(env):
    from workers import jobs
    from workers.runtime import redis_client

    r = redis_client()
    jobs.create_job(r, kind="score", params={}, job_id="failed-1")
    jobs.update_job(r, "failed-1", status="failed", message="boom")
    assert _cli("jobs", "status", "failed-1").exit_code == 1
    result = _cli("jobs", "status", "failed-1", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["status"] == "failed"


def test_results_and_wait_json_of_a_failed_job_say_so_and_exit_1(env):
    from workers import jobs, results
    from workers.runtime import redis_client, store
    from workers.submit import request_key

    r = redis_client()
    jobs.create_job(r, kind="score", params={}, job_id="failed-2")
    store().put(request_key("failed-2"), json.dumps({"items": [], "prefixes": []}).encode())
    row = {"key": "a.jpg", "object_key": "uploads/a.jpg", "status": "error", "error_kind": "empty"}
    results.write_part(store(), "failed-2", 0, [row])
    jobs.update_job(r, "failed-2", status="failed", message="boom", total=2, done=1)
    shown = _cli("jobs", "results", "failed-2", "--json")
    assert shown.exit_code == 1
    assert [json.loads(line)["key"] for line in shown.stdout.splitlines()] == ["a.jpg"]
    assert "is failed" in shown.stderr and "1 of 2" in shown.stderr and "boom" in shown.stderr
    waited = _cli("score", "anything", "--job-id", "failed-2", "--wait", "--json")
    assert waited.exit_code == 1 and json.loads(waited.stdout)["message"] == "boom"


def test_a_replanned_job_keeps_its_start_and_resume_leaves_a_done_job_alone(env):
    from workers import jobs, results
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring
    from workers.tasks.score import plan

    r = redis_client()
    job_id, _ = submit_scoring(items=[], job_id="timing-1")
    started = time.time() - 100.0
    jobs.update_job(r, job_id, started_at=started)
    plan(job_id)  # redelivered: the job has been running for 100 s
    assert float(jobs.get_job(r, job_id)["started_at"]) == started
    summary = results.read_summary(store(), job_id)
    assert summary["seconds"] >= 100.0

    result = _cli("jobs", "resume", job_id)
    assert result.exit_code == 0 and "nothing to resume" in result.output
    assert results.read_summary(store(), job_id) == summary
    assert jobs.get_job(r, job_id)["status"] == "done"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_out_rows_keep_the_store_key_and_the_metadata_warnings(tmp_path, suffix):
    import csv

    from workers.cli.score import write_rows

    row = {"key": "a.jpg", "object_key": "uploads/cli/j/00000-a.jpg", "status": "ok"}
    rows = [{**row, "warnings": ["age 'abc' ...", "sex 'x' ..."]}, row]
    out = tmp_path / f"rows{suffix}"
    write_rows(out, rows)
    if suffix == ".csv":
        with open(out, newline="") as fh:
            got = list(csv.DictReader(fh))
        assert got[0]["warnings"] == "age 'abc' ...; sex 'x' ..." and got[1]["warnings"] == ""
    else:
        got = [json.loads(line) for line in out.read_text().splitlines()]
        assert got[0]["warnings"] == ["age 'abc' ...", "sex 'x' ..."] and got[1]["warnings"] is None
    assert [r["object_key"] for r in got] == [row["object_key"]] * 2


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_out_rows_keep_every_field_of_a_result_row(tmp_path, suffix):
    import csv

    from workers.cli.score import write_rows

    row = {
        "key": "a.jpg",
        "object_key": "uploads/cli/j/00000-a.jpg",
        "status": "ok",
        "probability": 0.25,
        "label": "benign",
        "model_id": "m1",
        "quality": "ok",
        "width": 768,
        "height": 1024,
        "warnings": ["age 'abc' ..."],
    }
    out = tmp_path / f"rows{suffix}"
    write_rows(out, [row])
    if suffix == ".csv":
        with open(out, newline="") as fh:
            (got,) = csv.DictReader(fh)
        assert (got["width"], got["height"]) == ("768", "1024")
    else:
        (got,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert (got["width"], got["height"]) == (768, 1024)
    assert set(row) <= set(got)


def test_metadata_csv_reaches_the_objects_listed_under_a_store_prefix(env, tmp_path):
    from workers import sweeper
    from workers.runtime import store
    from workers.tasks.score import plan

    store().put("uploads/clinic-7/a.jpg", good_jpeg(1))
    store().put("uploads/clinic-7/b.jpg", good_jpeg(2))
    csv = tmp_path / "meta.csv"
    csv.write_text("file,age,sex,site\nphotos/a.jpg,70,male,back\n")
    result = _cli("score", "uploads/clinic-7/", "--metadata", str(csv), "--job-id", "pm-1")
    assert result.exit_code == 0, result.output
    plan("pm-1")  # as the worker would (one batch: scored inline, here without a model)
    (batch,) = json.loads(store().get(sweeper.plan_key("pm-1")))
    got = {i["key"]: i.get("metadata") for i in batch}
    assert got["uploads/clinic-7/a.jpg"]["age"] == "70"
    assert got["uploads/clinic-7/b.jpg"] is None


def test_jobs_help_names_the_sweep_default_and_every_job_kind():
    from workers.app import QUEUE_OF_KIND
    from workers.cli import app

    def help_of(*args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    assert "BIRTHMARK_SWEEP_MIN_AGE_S" in help_of("jobs", "sweep")  # once eaten as rich markup
    assert all(kind in help_of("jobs", "list") for kind in QUEUE_OF_KIND)


def test_a_queued_watcher_pass_expires_when_the_next_is_due(env, monkeypatch):
    """Behind a backlog of batches, stale passes are dropped rather than run back to back."""
    from tests.conftest import reset_caches

    monkeypatch.setenv("BIRTHMARK_WATCH_INTERVAL_S", "7")
    reset_caches()
    from workers.app import app

    entry = app.conf.beat_schedule["score-watch-uploads"]
    assert entry["task"] == "score.watch"
    assert entry["schedule"] == entry["options"]["expires"] == 7.0

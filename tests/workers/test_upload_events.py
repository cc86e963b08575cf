"""The upload watcher fed by bucket events: MinIO's access-format entries on a real Redis list, a
real S3 HTTP server (moto) holding the uploads, no worker (the jobs it queues are read back)."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote_plus

import pytest

from tests.conftest import reset_caches
from tests.workers.helpers import good_jpeg
from tests.workers.test_score_cli import _request
from workers.upload_events import UnreadableEvent, created_objects


def _record(bucket: str, key: str, name: str = "s3:ObjectCreated:Put") -> dict:
    """One event record as MinIO writes it (the key query-escaped, as MinIO's url.QueryEscape)."""
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-12-02T15:04:05.000Z",
        "eventName": name,
        "userIdentity": {"principalId": "birthmark"},
        "requestParameters": {"sourceIPAddress": "10.0.0.7"},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "birthmark"}, "arn": ""},
            "object": {"key": quote_plus(key), "size": 1234, "sequencer": "17F0A2B3C4D5E6F7"},
        },
        "source": {"host": "10.0.0.7", "port": "", "userAgent": "okhttp/4.12.0"},
    }


def _entry(bucket: str, key: str, name: str = "s3:ObjectCreated:Put") -> str:
    """What MinIO RPUSHes for one event with MINIO_NOTIFY_REDIS_FORMAT=access."""
    return json.dumps(
        [{"Event": [_record(bucket, key, name)], "EventTime": "2026-12-02T15:04:05.000Z"}]
    )


def test_created_objects_reads_minio_entries_and_decodes_keys():
    assert created_objects(_entry("bm", "uploads/app/my photo (1)+x.jpg")) == [
        ("bm", "uploads/app/my photo (1)+x.jpg")
    ]
    assert created_objects(
        _entry("bm", "uploads/a.jpg", "s3:ObjectCreated:CompleteMultipartUpload")
    )
    for not_an_upload in ("s3:ObjectRemoved:Delete", "s3:ObjectCreated:PutRetention"):
        assert created_objects(_entry("bm", "uploads/a.jpg", not_an_upload)) == []
    # Amazon S3's own notification: event names without "s3:", and a test event with no records.
    amazon = _record("bm", "uploads/b.jpg", "ObjectCreated:Put")
    assert created_objects(json.dumps({"Records": [amazon]})) == [("bm", "uploads/b.jpg")]
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bm"}
    assert created_objects(json.dumps(test_event)) == []


@pytest.mark.parametrize(
    "entry",
    [
        b"\xff\xfe",
        "not json",
        "{}",
        "[1, 2]",
        '[{"Event": [{"eventName": "s3:ObjectCreated:Put"}]}]',
    ],
)
def test_created_objects_refuses_what_is_not_an_event(entry):
    with pytest.raises(UnreadableEvent):
        created_objects(entry)


@pytest.fixture
def events(s3_env, monkeypatch):
    """BIRTHMARK_UPLOAD_EVENTS_KEY on: (store, redis, events key, a prefix of this test's own)."""
    from workers.runtime import redis_client, store

    key, prefix = f"test-events-{uuid.uuid4().hex[:8]}", f"uploads/{uuid.uuid4().hex[:8]}/"
    monkeypatch.setenv("BIRTHMARK_UPLOAD_EVENTS_KEY", key)
    monkeypatch.setenv("BIRTHMARK_WATCH_PREFIX", prefix)
    reset_caches()
    return store(), redis_client(), key, prefix


def _items(job_id: str) -> list[str]:
    return [i["key"] for i in _request(job_id)["items"]]


def test_a_pass_scores_what_the_events_announce_and_lists_only_when_due(events):
    from workers.watcher import watch_prefix

    st, r, key, prefix = events
    assert watch_prefix(prefix) is None  # the first pass lists: nothing there yet
    for name in ("a.jpg", "b c+d.jpg", "quiet.jpg"):
        st.put(prefix + name, good_jpeg(len(name)))
    r.rpush(
        key,
        _entry(st.bucket, prefix + "a.jpg"),
        _entry(st.bucket, prefix + "b c+d.jpg"),
        _entry(st.bucket, prefix + "a.jpg"),  # delivered twice (events are at least once)
        _entry(st.bucket, prefix + "a.jpg", "s3:ObjectRemoved:Delete"),
        _entry("another-bucket", prefix + "x.jpg"),
        _entry(st.bucket, "models/elsewhere.pt"),
        "garbage",
    )
    job = watch_prefix(prefix)
    # quiet.jpg has no event, and this pass does not list.
    assert _items(job) == [prefix + "a.jpg", prefix + "b c+d.jpg"]
    assert r.llen(key) == 0
    assert r.lrange(f"{key}:unreadable", 0, -1) == ["garbage"]  # kept for a person
    assert watch_prefix(prefix) is None
    r.rpush(key, _entry(st.bucket, prefix + "a.jpg"))  # a late duplicate of a scored upload
    assert watch_prefix(prefix) is None and r.llen(key) == 0
    # The listing interval passes: the listing finds the upload whose event was lost, only it.
    r.delete(f"birthmark:watch:listed:{prefix}")
    assert _items(watch_prefix(prefix)) == [prefix + "quiet.jpg"]


def test_a_pass_that_dies_before_queueing_leaves_its_events_claimed_for_the_next(
    events, monkeypatch
):
    from workers import watcher

    st, r, key, prefix = events
    watcher.watch_prefix(prefix)  # lists now, so the passes below take events only
    st.put(prefix + "a.jpg", good_jpeg(1))
    r.rpush(key, _entry(st.bucket, prefix + "a.jpg"))

    def die(**_):
        raise ConnectionError("broker went away")

    with monkeypatch.context() as m:
        m.setattr(watcher, "submit_scoring", die)
        with pytest.raises(ConnectionError):
            watcher.watch_prefix(prefix)
    assert r.llen(key) == 0  # taken: its key is claimed and pending
    assert watcher.watch_prefix(prefix) is None  # nothing new, but the pending job is queued
    (job_id,) = r.hvals(f"birthmark:watch:claims:{prefix}")
    assert _items(job_id) == [prefix + "a.jpg"]


def test_a_listing_that_fails_is_tried_again_by_the_next_pass_not_an_interval_later(
    events, monkeypatch
):
    from workers import watcher

    st, r, key, prefix = events
    st.put(prefix + "quiet.jpg", good_jpeg(1))  # no event: only a listing finds it

    def store_down(*_):
        raise ConnectionError("S3 endpoint unreachable")

    with monkeypatch.context() as m:
        m.setattr(watcher, "_list_new", store_down)
        with pytest.raises(ConnectionError):
            watcher.watch_prefix(prefix)
    assert _items(watcher.watch_prefix(prefix)) == [prefix + "quiet.jpg"]


def test_a_watcher_of_another_prefix_lists_and_leaves_the_events_alone(events):
    from workers.watcher import watch_prefix

    st, r, key, prefix = events
    st.put(prefix + "clinic-7/a.jpg", good_jpeg(1))
    r.rpush(key, _entry(st.bucket, prefix + "clinic-7/a.jpg"))
    assert _items(watch_prefix(prefix + "clinic-7/")) == [prefix + "clinic-7/a.jpg"]
    assert r.llen(key) == 1  # still there for the configured prefix's watcher


def test_minio_namespace_format_is_refused_with_what_to_set(events):
    from workers.upload_events import UploadEventsMisconfigured
    from workers.watcher import watch_prefix

    st, r, key, prefix = events
    r.hset(key, f"{st.bucket}/{prefix}a.jpg", json.dumps({"Records": []}))
    with pytest.raises(UploadEventsMisconfigured, match="FORMAT_<ID>=access"):
        watch_prefix(prefix)


def test_events_on_a_folder_store_are_one_clear_error_from_the_cli(env, monkeypatch, capsys):
    """Through main(), as a user meets it: `birthmark score --watch` exits 1 with what to change."""
    from workers.cli import main

    monkeypatch.setenv("BIRTHMARK_UPLOAD_EVENTS_KEY", "events")
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr("sys.argv", ["birthmark", "score", "--watch", "uploads/"])
    reset_caches()
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "error: BIRTHMARK_UPLOAD_EVENTS_KEY or _QUEUE_URL is set but the store" in err
    assert "is a folder, which has no bucket events" in err


# --- Amazon S3's notifications on an SQS queue: moto's S3 sends them itself, over real HTTP ---


@pytest.fixture
def sqs_events(s3_env, monkeypatch, s3_server):
    """The test bucket notifies an SQS queue of new objects under a prefix of this test's own."""
    import boto3

    from workers.runtime import store

    st, prefix = store(), f"uploads/{uuid.uuid4().hex[:8]}/"
    sqs = boto3.client("sqs", endpoint_url=s3_server, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"uploads-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    rules = [{"Name": "prefix", "Value": prefix}]
    st.client.put_bucket_notification_configuration(
        Bucket=st.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn["QueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": rules}},
                }
            ]
        },
    )
    monkeypatch.setenv("BIRTHMARK_UPLOAD_EVENTS_QUEUE_URL", url)
    monkeypatch.setenv("BIRTHMARK_WATCH_PREFIX", prefix)
    reset_caches()
    return store(), sqs, url, prefix


def _on_queue(sqs, url: str) -> int:
    attributes = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=attributes)["Attributes"]
    return sum(int(got[a]) for a in attributes)


def test_uploads_announced_on_sqs_are_scored_and_their_messages_deleted(sqs_events):
    from workers.watcher import watch_prefix

    st, sqs, url, prefix = sqs_events
    assert watch_prefix(prefix) is None  # lists (nothing yet); takes S3's s3:TestEvent, if sent
    assert _on_queue(sqs, url) == 0
    for name in ("a.jpg", "b c.jpg", "quiet.jpg"):
        st.put(prefix + name, good_jpeg(len(name)))
    # quiet.jpg's message is lost; a message that is no event is sent by someone else.
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    lost = next(m for m in received if "quiet.jpg" in m["Body"])
    sqs.delete_message(QueueUrl=url, ReceiptHandle=lost["ReceiptHandle"])
    for m in received:
        if m is not lost:  # back on the queue at once
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
            )
    sqs.send_message(QueueUrl=url, MessageBody="not an event")
    job = watch_prefix(prefix)
    assert sorted(_items(job)) == [prefix + "a.jpg", prefix + "b c.jpg"]
    # The garbage stays, hidden for now, for the queue's redrive policy; the events are deleted.
    assert _on_queue(sqs, url) == 1
    r = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert r["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert watch_prefix(prefix) is None
    # The listing interval passes: the listing finds the upload whose message was lost.
    from workers.runtime import redis_client

    redis_client().delete(f"birthmark:watch:listed:{prefix}")
    assert _items(watch_prefix(prefix)) == [prefix + "quiet.jpg"]


def test_a_missing_queue_and_two_event_sources_are_refused(sqs_events, monkeypatch):
    from workers.settings import Settings
    from workers.upload_events import UploadEventsMisconfigured
    from workers.watcher import watch_prefix

    _, sqs, url, prefix = sqs_events
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(UploadEventsMisconfigured, match="no SQS queue at"):
        watch_prefix(prefix)
    monkeypatch.setenv("BIRTHMARK_UPLOAD_EVENTS_KEY", "events")
    with pytest.raises(ValueError, match="not both"):
        Settings()


def test_the_sqs_client_talks_to_the_queues_own_host_and_region():
    from workers.upload_events import _sqs_client

    aws = _sqs_client("https://sqs.eu-west-1.amazonaws.com/123456789012/uploads", "us-east-1")
    assert aws.meta.region_name == "eu-west-1"
    assert aws.meta.endpoint_url == "https://sqs.eu-west-1.amazonaws.com"
    local = _sqs_client("http://127.0.0.1:4566/000000000000/uploads", "ap-south-1")
    assert (local.meta.region_name, local.meta.endpoint_url) == (
        "ap-south-1",
        "http://127.0.0.1:4566",
    )

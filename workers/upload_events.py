"""Uploads announced by the store: bucket events on a Redis list (MinIO) or an SQS queue (S3).

MinIO's Redis target with ``MINIO_NOTIFY_REDIS_FORMAT=access`` RPUSHes one JSON entry per event
onto a list: ``[{"Event": [<record>], "EventTime": "..."}]``. Amazon S3 sends its notifications
to an SQS queue as ``{"Records": [<record>]}`` (and one ``s3:TestEvent`` when they are set up).
Both records are Amazon's shape: ``eventName`` (``ObjectCreated:Put``; MinIO writes
``s3:ObjectCreated:Put``), ``s3.bucket.name``, ``s3.object.key`` (URL-encoded). The upload
watcher takes entries from a source, claims their keys, and only then tells the source it is done
with them (``workers.watcher``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from urllib.parse import unquote_plus, urlsplit

import boto3
import redis
from botocore.config import Config
from botocore.exceptions import ClientError

from workers.store import _TRANSIENT, StoreUnavailable, _is_transient

__all__ = [
    "CREATED",
    "RedisListEvents",
    "SqsQueueEvents",
    "UnreadableEvent",
    "UploadEventsMisconfigured",
    "created_objects",
]

# New objects, as Amazon S3 names them in a record (MinIO's names add "s3:" in front).
# ObjectCreated:PutRetention / PutLegalHold / PutTagging change an object that exists.
CREATED = frozenset(
    {
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
    }
)


class UnreadableEvent(ValueError):
    """An entry that is not a bucket event."""


class UploadEventsMisconfigured(ValueError):
    """The configured event source cannot be read as bucket events."""


def _records(entry: object) -> Iterable[dict]:
    if isinstance(entry, dict) and isinstance(entry.get("Records"), list):
        return entry["Records"]  # Amazon S3's notification
    if isinstance(entry, dict) and entry.get("Event") == "s3:TestEvent":
        return []  # sent once when notifications are configured
    if isinstance(entry, list) and all(
        isinstance(e, dict) and isinstance(e.get("Event"), list) for e in entry
    ):
        return [record for e in entry for record in e["Event"]]  # MinIO's access format
    raise UnreadableEvent("neither MinIO's access format nor an S3 notification")


def created_objects(entry: str | bytes) -> list[tuple[str, str]]:
    """``(bucket, key)`` of each object that one entry says was created (keys decoded)."""
    try:
        data = json.loads(entry)
    except ValueError as err:
        raise UnreadableEvent(f"not JSON: {err}") from err
    try:
        return [
            (r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"]))
            for r in _records(data)
            if str(r.get("eventName")).removeprefix("s3:") in CREATED
        ]
    except (KeyError, TypeError, AttributeError) as err:
        raise UnreadableEvent(f"a record without s3.bucket.name or s3.object.key: {err!r}") from err


class RedisListEvents:
    """MinIO's Redis target in ``access`` format: a list, read from its head and trimmed."""

    per_pass = 10_000  # entries a watcher pass takes; the next pass takes the rest

    def __init__(self, r: redis.Redis, key: str) -> None:
        self.r, self.key = r, key
        self.unreadable_key = f"{key}:unreadable"
        self._taken: list[str] = []

    def take(self, limit: int) -> list[str]:
        try:
            self._taken = self.r.lrange(self.key, 0, limit - 1)
        except redis.ResponseError as err:  # WRONGTYPE: MinIO's namespace format writes a hash
            raise UploadEventsMisconfigured(
                f"Redis key {self.key!r} holds a {self.r.type(self.key)}, not a list of events: "
                "set MINIO_NOTIFY_REDIS_FORMAT_<ID>=access"
            ) from err
        return self._taken

    def done(self, unreadable: Sequence[int]) -> None:
        """Drop the taken entries, keeping those at ``unreadable`` on ``<key>:unreadable``."""
        if not self._taken:
            return
        pipe = self.r.pipeline()
        pipe.ltrim(self.key, len(self._taken), -1)
        if unreadable:
            pipe.rpush(self.unreadable_key, *(self._taken[i] for i in unreadable))
        pipe.execute()
        self._taken = []

    def __str__(self) -> str:
        return f"Redis list {self.key} (unreadable entries kept on {self.unreadable_key})"


# A taken message is hidden from other receivers this long: past the watcher's lock, so a pass
# that dies leaves its messages to a later one.
SQS_VISIBILITY_S = 360
_SQS_HOST = re.compile(r"sqs[.-]([a-z0-9-]+)\.amazonaws\.com")


@lru_cache(maxsize=8)
def _sqs_client(queue_url: str, region: str):
    """One client per queue and process (made in ~50 ms; a pass may run every few seconds)."""
    parts = urlsplit(queue_url)
    aws = _SQS_HOST.fullmatch(parts.hostname or "")
    # The queue's own host is its endpoint (AWS, or moto and ElasticMQ in tests).
    return boto3.client(
        "sqs",
        endpoint_url=f"{parts.scheme}://{parts.netloc}",
        region_name=aws.group(1) if aws else region,
        config=Config(retries={"max_attempts": 4, "mode": "standard"}, read_timeout=30),
    )


class SqsQueueEvents:
    """Amazon S3's notifications on an SQS queue: received, then deleted once claimed.

    A message that is not an event is left on the queue: after the queue's ``maxReceiveCount``
    its redrive policy moves it to the dead-letter queue, which is where SQS keeps such messages.
    """

    per_pass = 1_000  # messages a watcher pass takes: SQS hands out 10 per request

    def __init__(self, queue_url: str, *, region: str) -> None:
        self.queue_url = queue_url
        self.client = _sqs_client(queue_url, region)
        self._taken: list[dict] = []

    def _call(self, name: str, **kwargs) -> dict:
        try:
            return getattr(self.client, name)(QueueUrl=self.queue_url, **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                raise UploadEventsMisconfigured(
                    f"no SQS queue at {self.queue_url}: check BIRTHMARK_UPLOAD_EVENTS_QUEUE_URL"
                ) from err
            if _is_transient(err):
                raise StoreUnavailable(f"SQS {name}: {err}") from err
            raise  # access denied, a bad request: not something a retry mends
        except _TRANSIENT as err:
            raise StoreUnavailable(f"SQS {name}: {type(err).__name__}") from err

    def take(self, limit: int) -> list[str]:
        self._taken = []
        while len(self._taken) < limit:
            got = self._call(
                "receive_message",
                MaxNumberOfMessages=min(10, limit - len(self._taken)),
                VisibilityTimeout=SQS_VISIBILITY_S,
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not got:
                break
            self._taken += got
        return [m["Body"] for m in self._taken]

    def done(self, unreadable: Sequence[int]) -> None:
        """Delete the taken messages but those at ``unreadable`` (see the class)."""
        keep = set(unreadable)
        handles = [m["ReceiptHandle"] for i, m in enumerate(self._taken) if i not in keep]
        for start in range(0, len(handles), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": h}
                for n, h in enumerate(handles[start : start + 10])
            ]
            self._call("delete_message_batch", Entries=entries)
        self._taken = []

    def __str__(self) -> str:
        return f"SQS queue {self.queue_url} (unreadable messages left to its redrive policy)"

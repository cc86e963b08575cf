"""Uploads announced by the object store: MinIO's bucket events, pushed to a Redis list.

With ``MINIO_NOTIFY_REDIS_FORMAT=access`` MinIO RPUSHes one JSON entry per event onto a list:
``[{"Event": [<S3 event record>], "EventTime": "..."}]``, each record shaped like Amazon's
(``eventName``, ``s3.bucket.name``, ``s3.object.key`` URL-encoded). The upload watcher reads the
head of that list instead of listing the prefix (``BIRTHMARK_UPLOAD_EVENTS_KEY``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import unquote_plus

__all__ = ["CREATED", "UnreadableEvent", "created_objects"]

# New objects. s3:ObjectCreated:PutRetention / PutLegalHold / PutTagging change an object that
# exists, so they are not uploads.
CREATED = frozenset(
    {
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:Post",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:CompleteMultipartUpload",
    }
)


class UnreadableEvent(ValueError):
    """An entry on the event list that is not a MinIO access-format event."""


def _records(entry: object) -> Iterable[dict]:
    if isinstance(entry, dict) and isinstance(entry.get("Records"), list):
        return entry["Records"]  # Amazon's shape (an S3 notification body), accepted as well
    if isinstance(entry, list) and all(
        isinstance(e, dict) and isinstance(e.get("Event"), list) for e in entry
    ):
        return [record for e in entry for record in e["Event"]]
    raise UnreadableEvent("neither MinIO's access format nor an S3 notification")


def created_objects(entry: str | bytes) -> list[tuple[str, str]]:
    """``(bucket, key)`` of each object that one list entry says was created (keys decoded)."""
    try:
        data = json.loads(entry)
    except ValueError as err:
        raise UnreadableEvent(f"not JSON: {err}") from err
    try:
        return [
            (r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"]))
            for r in _records(data)
            if r.get("eventName") in CREATED
        ]
    except (KeyError, TypeError, AttributeError) as err:
        raise UnreadableEvent(f"a record without s3.bucket.name or s3.object.key: {err!r}") from err

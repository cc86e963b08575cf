"""The upload watcher: score objects that appear under a prefix, each once.

One pass finds new keys, claims each in Redis so two passes never queue it twice, and submits one
scoring job. It finds them by listing the prefix and keeping what is newer than the stored cursor
(less a grace window: a listing may show an object late, with an older LastModified), or, with
``BIRTHMARK_UPLOAD_EVENTS_KEY`` or ``_QUEUE_URL`` set, from the bucket events the store sent to a
Redis list or an SQS queue (``workers.upload_events``), listing only every
``watch_list_interval_s`` to catch a lost event.
The ``score.watch`` beat task runs a pass on a worker; `birthmark score --watch` runs passes in its
own process, so this module imports no scoring code (torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import NamedTuple

from workers import jobs
from workers.runtime import redis_client, store
from workers.settings import Settings, get_settings
from workers.store import S3Store
from workers.submit import CLI_UPLOADS, submit_scoring
from workers.upload_events import (
    RedisListEvents,
    SqsQueueEvents,
    UnreadableEvent,
    UploadEventsMisconfigured,
    created_objects,
)

__all__ = ["GRACE_S", "watch_prefix"]

log = logging.getLogger(__name__)

GRACE_S = 600.0  # objects may appear in a listing with an older LastModified than the cursor


class _Listing(NamedTuple):
    keys: list[str]  # listed since the cursor, less the grace window
    cursor_key: str
    cursor: float  # LastModified stored
    next_cursor: float  # ... and to store once the keys are queued


def _cursor_key(prefix: str) -> str:
    return f"state/watch-{hashlib.sha1(prefix.encode()).hexdigest()[:12]}.json"


def _job_key(job_id: str) -> str:
    """The keys a claimed job scores, kept until it is queued."""
    return f"birthmark:watch:job:{job_id}"


def _queue_claimed(r, pending: str, job_id: str, keys: list[str]) -> None:
    """Submit the job for ``keys`` claimed under ``job_id``; then it is no longer pending."""
    submit_scoring(items=[{"key": k, "source": k} for k in keys], job_id=job_id, kind="watch")
    r.srem(pending, job_id)
    r.delete(_job_key(job_id))


def watch_prefix(prefix: str) -> str | None:
    """One watcher pass over ``prefix`` (also run in-process by `birthmark score --watch`)."""
    st, r = store(), redis_client()
    owner = f"watch-{time.time()}"
    if not jobs.acquire_lock(r, f"watch:{prefix}", owner, ttl_s=300):
        return None  # another watcher run is listing right now
    try:
        return _watch_once(st, r, prefix)
    finally:
        jobs.release_lock(r, f"watch:{prefix}", owner)


def _watch_once(st, r, prefix: str) -> str | None:
    claims = f"birthmark:watch:claims:{prefix}"
    pending = f"birthmark:watch:pending:{prefix}"
    # A crash between claiming keys and queueing their job leaves them pending: queue them now.
    for job_id in r.smembers(pending):
        _queue_claimed(r, pending, job_id, r.lrange(_job_key(job_id), 0, -1))
    settings = get_settings()
    # The events are for the configured prefix: a watcher of another (`score --watch`) lists.
    events = _event_source(st, r, settings) if prefix == settings.watch_prefix else None
    found: dict[str, None] = {}  # new keys, in order, once each
    unreadable: list[int] = []
    if events:
        keys, unreadable = _read_events(st, events, prefix)
        found.update(dict.fromkeys(keys))
    # Without events every pass lists; with them, one pass per interval does, for lost events.
    listed_mark = f"birthmark:watch:listed:{prefix}"
    listing_due = not events or r.set(
        listed_mark, "1", nx=True, ex=math.ceil(settings.watch_list_interval_s)
    )
    listed = None
    if listing_due:
        try:
            listed = _list_new(st, r, prefix, claims)
        except Exception:
            if events:  # the retry lists, rather than the pass an interval later
                r.delete(listed_mark)
            raise
    if listed is not None:
        found.update(dict.fromkeys(listed.keys))
    seen = r.hmget(claims, list(found)) if found else []
    unseen = [k for k, claimed in zip(found, seen, strict=True) if not claimed]
    job_id = jobs.new_job_id("watch")
    pipe = r.pipeline()
    for key in unseen:
        pipe.hsetnx(claims, key, job_id)
    mine = [k for k, won in zip(unseen, pipe.execute(), strict=True) if won]
    if mine:
        r.rpush(_job_key(job_id), *mine)
        r.sadd(pending, job_id)
    if events:
        events.done(unreadable)  # only once their keys are claimed: a pass that dies re-reads them
    if mine:
        _queue_claimed(r, pending, job_id, mine)
    if listed is not None and listed.next_cursor != listed.cursor:
        st.put(listed.cursor_key, json.dumps({"last_modified": listed.next_cursor}).encode())
    return job_id if mine else None


def _list_new(st, r, prefix: str, claims: str) -> _Listing:
    """Keys listed under ``prefix`` since the stored cursor.

    Claims are only consulted for objects still inside the cursor's window: the rest are dropped,
    so the hash holds the last ~10 minutes of uploads (since the last listing) rather than every
    upload ever.
    """
    cursor_key = _cursor_key(prefix)
    cursor = json.loads(st.get(cursor_key)) if st.exists(cursor_key) else {"last_modified": 0.0}
    fresh = [
        o
        for o in st.list(prefix)
        if o.last_modified >= cursor["last_modified"] - GRACE_S
        # A CLI upload is scored by the job it was uploaded for; the watcher would score it twice.
        and not o.key.startswith(CLI_UPLOADS)
    ]
    in_window = {o.key for o in fresh}
    stale = [k for k in r.hkeys(claims) if k not in in_window]
    for i in range(0, len(stale), 1000):
        r.hdel(claims, *stale[i : i + 1000])
    newest = max((o.last_modified for o in fresh), default=0.0)
    last = cursor["last_modified"]
    return _Listing([o.key for o in fresh], cursor_key, last, max(newest, last))


def _event_source(st, r, settings: Settings) -> RedisListEvents | SqsQueueEvents | None:
    if not (settings.upload_events_key or settings.upload_events_queue_url):
        return None
    if not isinstance(st, S3Store):
        raise UploadEventsMisconfigured(
            f"BIRTHMARK_UPLOAD_EVENTS_KEY or _QUEUE_URL is set but the store {st.uri} is a folder, "
            "which has no bucket events: unset it, or use an s3:// store"
        )
    if settings.upload_events_key:
        return RedisListEvents(r, settings.upload_events_key)
    return SqsQueueEvents(settings.upload_events_queue_url, region=settings.s3_region)


def _read_events(st: S3Store, events, prefix: str) -> tuple[list[str], list[int]]:
    """New keys under ``prefix`` that the source's next entries announce, and the unreadable ones.

    Events for another bucket, outside the prefix or for a CLI upload are not this watcher's.
    """
    keys, unreadable = [], []
    for i, entry in enumerate(events.take(events.per_pass)):
        try:
            objects = created_objects(entry)
        except UnreadableEvent as err:
            log.warning("unreadable entry on %s: %s", events, err)
            unreadable.append(i)
            continue
        for bucket, object_key in objects:
            if bucket != st.bucket or not object_key.startswith(st.prefix):
                continue
            key = object_key[len(st.prefix) :]
            if key.startswith(prefix) and not key.startswith(CLI_UPLOADS):
                keys.append(key)
    return keys, unreadable

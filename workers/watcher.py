"""The upload watcher: score objects that appear under a prefix, each once.

One pass lists the prefix, keeps what is newer than the stored cursor (less a grace window: a
listing may show an object late, with an older LastModified), claims each key in Redis so two
passes never queue it twice, and submits one scoring job. The ``score.watch`` beat task runs a
pass on a worker; `birthmark score --watch` runs passes in its own process, so this module imports
no scoring code (torch).
"""

from __future__ import annotations

import hashlib
import json
import time

from workers import jobs
from workers.runtime import redis_client, store
from workers.submit import CLI_UPLOADS, submit_scoring

__all__ = ["GRACE_S", "watch_prefix"]

GRACE_S = 600.0  # objects may appear in a listing with an older LastModified than the cursor


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
    cursor_key = _cursor_key(prefix)
    cursor = json.loads(st.get(cursor_key)) if st.exists(cursor_key) else {"last_modified": 0.0}
    fresh = [
        o
        for o in st.list(prefix)
        if o.last_modified >= cursor["last_modified"] - GRACE_S
        # A CLI upload is scored by the job it was uploaded for; the watcher would score it twice.
        and not o.key.startswith(CLI_UPLOADS)
    ]
    # Claims are only consulted for objects still inside the cursor's window: drop the rest, so
    # the hash holds the last ~10 minutes of uploads rather than every upload ever.
    in_window = {o.key for o in fresh}
    stale = [k for k in r.hkeys(claims) if k not in in_window]
    for i in range(0, len(stale), 1000):
        r.hdel(claims, *stale[i : i + 1000])
    if not fresh:
        return None
    unseen = [
        o
        for o, seen in zip(fresh, r.hmget(claims, [o.key for o in fresh]), strict=True)
        if not seen
    ]
    job_id = jobs.new_job_id("watch")
    pipe = r.pipeline()
    for o in unseen:
        pipe.hsetnx(claims, o.key, job_id)
    mine = [o for o, won in zip(unseen, pipe.execute(), strict=True) if won]
    newest = max(o.last_modified for o in fresh)
    if mine:
        keys = [o.key for o in mine]
        r.rpush(_job_key(job_id), *keys)
        r.sadd(pending, job_id)
        _queue_claimed(r, pending, job_id, keys)
    st.put(cursor_key, json.dumps({"last_modified": max(newest, cursor["last_modified"])}).encode())
    return job_id if mine else None

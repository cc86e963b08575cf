"""Job bookkeeping in Redis: records, progress counters, idempotency keys, completion."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

__all__ = [
    "new_job_id",
    "create_job",
    "find_job",
    "claim_enqueue",
    "get_job",
    "update_job",
    "watching",
    "list_jobs",
    "UNFINISHED",
    "unfinished_jobs",
    "done_batches",
    "complete_batch",
    "batch_summaries",
    "start_run",
    "end_run",
    "acquire_lock",
    "refresh_lock",
    "release_lock",
]

_PREFIX = "birthmark:job:"
UNFINISHED = ("queued", "running")  # statuses of a job whose work is still to run
_INDEX = "birthmark:jobs"

# Keep the batch's summary (the latest, like its part file), mark the batch complete at most once,
# then bump the counters; returns the number of batches done.
_COMPLETE_BATCH = """
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'errors', ARGV[3])
  redis.call('PUBLISH', KEYS[3], 'batch')
end
return redis.call('SCARD', KEYS[2])
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Claim the idempotency key (if any), write the record and index it, all or nothing: a client that
# dies half way can no longer leave a key pointing at a job that was never written.
# KEYS: idem key (or ""), job hash, index. ARGV: job id, created_at, then field/value pairs.
_CREATE = """
if KEYS[1] ~= '' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
    return {redis.call('GET', KEYS[1]), 0}
  end
end
if redis.call('HSETNX', KEYS[2], 'id', ARGV[1]) == 0 then return {ARGV[1], 0} end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return {ARGV[1], 1}
"""


_CLAIM_ENQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
return redis.call('HSETNX', KEYS[1], 'enqueued_at', ARGV[1])
"""


def new_job_id(kind: str) -> str:
    """Sortable, unique: ``<kind>-<utc time>-<random>``."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def _idem_key(idempotency_key: str) -> str:
    return f"birthmark:idem:{idempotency_key}"


def create_job(
    r: redis.Redis,
    *,
    kind: str,
    params: dict[str, Any],
    job_id: str | None = None,
    idempotency_key: str | None = None,
    task: str | None = None,
) -> tuple[str, bool]:
    """Create a job record; returns ``(job_id, created)``. ``task`` names the one task that runs
    a non-scoring job (kept so that a lost message can be queued again).

    The same ``job_id`` or ``idempotency_key`` twice gives back the first job and ``created=False``.
    """
    job_id = job_id or new_job_id(kind)
    now = time.time()
    record = {
        "id": job_id,
        "kind": kind,
        "status": "queued",
        "created_at": now,
        "updated_at": now,
        "params": json.dumps(params),
        "total": 0,
        "done": 0,
        "errors": 0,
        "batches": 0,
        **({"task": task} if task else {}),
    }
    idem = _idem_key(idempotency_key) if idempotency_key else ""
    pairs = [str(x) for kv in record.items() for x in kv]
    found, created = r.register_script(_CREATE)(
        keys=[idem, _PREFIX + job_id, _INDEX], args=[job_id, repr(now), *pairs]
    )
    return found, bool(created)


def find_job(
    r: redis.Redis, *, job_id: str | None = None, idempotency_key: str | None = None
) -> str | None:
    """The job :func:`create_job` would give back for these arguments, if it exists already."""
    if idempotency_key:
        found = r.get(_idem_key(idempotency_key))
        if found:
            return found
    if job_id and r.exists(_PREFIX + job_id):
        return job_id
    return None


def claim_enqueue(r: redis.Redis, job_id: str) -> bool:
    """True for exactly one caller of a queued job that nobody has queued yet.

    The submitter that creates a job claims it and queues its first task. If that submitter died
    in between (after the record, before the queue), the next submission of the same job id or
    idempotency key claims it instead, so the job runs rather than waiting forever.
    """
    return bool(r.register_script(_CLAIM_ENQUEUE)(keys=[_PREFIX + job_id], args=[time.time()]))


def get_job(r: redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = r.hgetall(_PREFIX + job_id)
    if not raw:
        return None
    job: dict[str, Any] = dict(raw)
    for field in ("total", "done", "errors", "batches"):
        job[field] = int(job.get(field, 0) or 0)
    for field in ("created_at", "updated_at"):
        job[field] = float(job.get(field, 0) or 0)
    for field in ("params", "progress", "result"):
        if field in job:
            job[field] = json.loads(job[field])
    return job


def update_job(r: redis.Redis, job_id: str, **fields: Any) -> None:
    encoded = {
        k: json.dumps(v) if isinstance(v, dict | list) else v
        for k, v in fields.items()
        if v is not None
    }
    encoded["updated_at"] = time.time()
    pipe = r.pipeline(transaction=False)  # one round trip
    pipe.hset(_PREFIX + job_id, mapping=encoded)
    pipe.publish(_changes(job_id), "update")
    pipe.execute()


def _changes(job_id: str) -> str:
    return f"{_PREFIX}{job_id}:changes"


@contextmanager
def watching(r: redis.Redis, job_id: str) -> Iterator[Callable[[float], bool]]:
    """Subscribe to ``job_id``'s changes (progress, status); yields ``wait(timeout_s)``, which
    returns True as soon as the record changed since the previous call, False at the timeout.

    Read the record after subscribing and before waiting, so no change falls in between. A
    message can still be lost (a dropped connection), so waiters also re-read at the timeout.
    """
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(_changes(job_id))

    def wait(timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        changed = False
        while not changed and (left := deadline - time.monotonic()) > 0:
            changed = pubsub.get_message(timeout=left) is not None  # None: the subscribe reply
        while pubsub.get_message(timeout=0) is not None:  # changes that came meanwhile
            pass
        return changed

    try:
        yield wait
    finally:
        pubsub.close()


def unfinished_jobs(r: redis.Redis, *, since: float) -> dict[str, float | None]:
    """Jobs created since ``since`` (epoch s) and still queued or running: their ids and when
    they were queued (None if not yet)."""
    ids = r.zrangebyscore(_INDEX, since, "+inf")
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(_PREFIX + job_id, "status", "enqueued_at")
    return {
        job_id: float(enqueued_at) if enqueued_at else None
        for job_id, (status, enqueued_at) in zip(ids, pipe.execute(), strict=True)
        if status in UNFINISHED
    }


def done_batches(r: redis.Redis, job_id: str) -> set[int]:
    """Indices of the batches of ``job_id`` recorded by :func:`complete_batch`."""
    return {int(i) for i in r.smembers(f"{_PREFIX}{job_id}:batches")}


def list_jobs(r: redis.Redis, *, limit: int = 20, kind: str | None = None) -> list[dict]:
    ids = r.zrevrange(_INDEX, 0, -1 if kind else limit - 1)
    jobs = [j for j in (get_job(r, i) for i in ids) if j and (kind is None or j["kind"] == kind)]
    return jobs[:limit]


def complete_batch(r: redis.Redis, job_id: str, batch: int, summary: dict[str, Any]) -> int:
    """Record batch ``batch`` as written, once; returns how many batches are complete.

    ``summary`` (``results.summarize_rows`` of the batch's rows) gives the counts the job's record
    adds up and is kept for :func:`batch_summaries`; a retried batch replaces it, as it replaces its
    part file.
    """
    script = r.register_script(_COMPLETE_BATCH)
    keys = [_PREFIX + job_id, f"{_PREFIX}{job_id}:batches", _changes(job_id), _summaries(job_id)]
    body = json.dumps(summary, sort_keys=True)
    return int(script(keys=keys, args=[batch, summary["total"], summary["errors"], body]))


def batch_summaries(r: redis.Redis, job_id: str) -> dict[int, dict[str, Any]]:
    """The summaries :func:`complete_batch` kept, by batch index."""
    return {int(i): json.loads(v) for i, v in r.hgetall(_summaries(job_id)).items()}


def _summaries(job_id: str) -> str:
    return f"{_PREFIX}{job_id}:summaries"


_RUN_TTL_S = 7 * 24 * 3600
# One round trip each: count a batch run in, and out (the key goes when no run is left).
_START_RUN = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return n
"""
_END_RUN = """
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
return 0
"""


def start_run(r: redis.Redis, job_id: str, part: str = "run") -> int:
    """Count a run of ``part`` of a job as started; returns how many earlier runs never ended.

    A run that never ended had its worker die under it (killed, out of memory, or a decoder that
    crashed the process); the redelivered task can then decode in child processes.
    """
    key = f"{_PREFIX}{job_id}:{part}:runs"
    return int(r.register_script(_START_RUN)(keys=[key], args=[_RUN_TTL_S])) - 1


def end_run(r: redis.Redis, job_id: str, part: str = "run") -> None:
    """The run counted by :func:`start_run` ended (done, or failed and will retry)."""
    r.register_script(_END_RUN)(keys=[f"{_PREFIX}{job_id}:{part}:runs"])


def acquire_lock(r: redis.Redis, name: str, owner: str, *, ttl_s: int) -> bool:
    """Take lock ``name`` for ``owner``; the same owner (a redelivered task) may take it again."""
    key = f"birthmark:lock:{name}"
    if r.set(key, owner, nx=True, ex=ttl_s):
        return True
    return r.get(key) == owner


def refresh_lock(r: redis.Redis, name: str, owner: str, *, ttl_s: int) -> None:
    key = f"birthmark:lock:{name}"
    if r.get(key) == owner:
        r.expire(key, ttl_s)


def release_lock(r: redis.Redis, name: str, owner: str) -> None:
    r.register_script(_RELEASE)(keys=[f"birthmark:lock:{name}"], args=[owner])

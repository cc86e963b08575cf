"""Work the broker lost: found by looking in the broker itself, so that it can be queued again.

kombu's Redis transport takes a message off a queue (BRPOP) and records it as unacknowledged in a
second step. A worker killed between the two, or a Redis that stops while a BRPOP is answered,
loses that message: its job stays ``queued`` or ``running`` with work that nothing will ever run.
A job that merely waits behind a backlog looks the same from the job record (no progress), so
"lost" is decided from the broker: work is lost when no message for it waits in a queue or is
held unacknowledged by a worker. Job tasks carry deterministic ids (:func:`run_task_id` for a
one-task job such as training, :func:`plan_task_id` and :func:`batch_task_id` for scoring) so that
a message can be matched to its job and batch.

A message in the instant between BRPOP and the unacknowledged record is in neither place, so a
batch is only reported lost when two looks ``confirm_s`` apart both miss it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.transport.redis import Channel

from workers import jobs
from workers.holders import alive_key, holder_key
from workers.store import ObjectMissing, Store

__all__ = [
    "Lost",
    "Orphan",
    "find_orphans",
    "batch_task_id",
    "run_task_id",
    "finalize_task_id",
    "find_lost",
    "plan_key",
    "plan_task_id",
    "task_ids_in_broker",
]

SCORING_KINDS = ("score", "watch")
_CHUNK = 500


def run_task_id(job_id: str) -> str:
    """The id of the one task of a non-scoring job (train, pull, curate)."""
    return f"{job_id}.run"


def plan_task_id(job_id: str) -> str:
    return f"{job_id}.plan"


def batch_task_id(job_id: str, index: int) -> str:
    return f"{job_id}.batch-{index}"


def finalize_task_id(job_id: str) -> str:
    return f"{job_id}.finalize"


def plan_key(job_id: str) -> str:
    """The job's batches as planned (a JSON list of item lists), written once by ``score.plan``."""
    return f"results/{job_id}/plan.json"


def _id_of(message: Any) -> str | None:
    """The Celery task id of a kombu message (a dict), or None for anything else."""
    try:
        return message["headers"]["id"]
    except (KeyError, TypeError):
        return None


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def task_ids_in_broker(r: redis.Redis, queues: Sequence[str]) -> set[str]:
    """Ids of the task messages waiting in ``queues`` (each one's priority lists) or held
    unacknowledged by a worker (any queue).

    Producers LPUSH and consumers pop from the other end, so paging from the head may see a
    message twice but never skips one that stays queued.
    """
    lists = [f"{q}{Channel.sep}{p}" if p else q for q in queues for p in Channel.priority_steps]
    ids: set[str | None] = set()
    for key in lists:
        start = 0
        while True:
            page = r.lrange(key, start, start + _CHUNK - 1)
            ids.update(_id_of(_loads(m)) for m in page)
            if len(page) < _CHUNK:
                break
            start += _CHUNK
    ids.discard(None)
    return ids | set(_held(r).values())  # type: ignore[return-value]


def _held(r: redis.Redis) -> dict[str, str]:
    """Task ids of the messages held unacknowledged by workers (any queue), by delivery tag."""
    held: dict[str, str] = {}
    for tag, value in r.hscan_iter(Channel.unacked_key, count=_CHUNK):
        record = _loads(value)  # [message, exchange, routing key]
        task_id = _id_of(record[0] if isinstance(record, list) and record else None)
        if task_id:
            held[tag] = task_id
    return held


@dataclass
class Lost:
    """What a job needs queued again: its task (by name), or for a scoring job its plan, some
    batches, or only its finalize."""

    job_id: str
    task: str | None = None
    plan: bool = False
    batches: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    finalize: bool = False

    def __bool__(self) -> bool:
        return bool(self.task or self.plan or self.batches or self.finalize)

    def describe(self) -> str:
        if self.task:
            return f"{self.job_id}: {self.task}"
        if self.plan:
            return f"{self.job_id}: plan"
        if self.batches:
            return f"{self.job_id}: batches {sorted(self.batches)}"
        return f"{self.job_id}: finalize"


def _lost_in(r: redis.Redis, st: Store, job_id: str, in_broker: set[str]) -> Lost | None:
    job = jobs.get_job(r, job_id)  # read after the broker: finished meanwhile is not lost
    if job is None or job["status"] not in jobs.UNFINISHED:
        return None
    if job["kind"] not in SCORING_KINDS:
        if not job.get("task") or run_task_id(job_id) in in_broker:
            return None  # queued or running (or from before tasks had ids: not ours to judge)
        return Lost(job_id, task=job["task"])
    if plan_task_id(job_id) in in_broker or finalize_task_id(job_id) in in_broker:
        return None  # planning (or queueing its batches), or finalizing, right now
    if job["status"] == "queued":
        return Lost(job_id, plan=True)  # the plan message was lost before it ran
    # The plan marks the job running with its batch count once its batches are planned.
    done = jobs.done_batches(r, job_id)
    queued = {i for i in range(job["batches"]) if batch_task_id(job_id, i) in in_broker}
    missing = [i for i in range(job["batches"]) if i not in done and i not in queued]
    if missing:  # only now read the batches' items (one store GET)
        try:
            planned = json.loads(st.get(plan_key(job_id)))
        except ObjectMissing:
            return Lost(job_id, plan=True)  # re-planning rebuilds the batches
        return Lost(job_id, batches={i: planned[i] for i in missing})
    if not queued:  # every part written and no batch task left to finalize inline
        return Lost(job_id, finalize=True)
    return None


def find_lost(
    r: redis.Redis,
    st: Store,
    *,
    queues: Sequence[str],
    min_age_s: float = 60.0,
    lookback_s: float = 7 * 24 * 3600.0,
    confirm_s: float = 5.0,
    sleep: Callable[[float], object] = time.sleep,
) -> list[Lost]:
    """Jobs with work that no message will ever run, as seen by two looks at the broker.

    Only jobs queued at least ``min_age_s`` ago count (a submitter records a job, then queues
    its first task). Each look reads the broker before the jobs, so work that finishes during
    the scan counts as done, not lost. Cheap when no job is unfinished; with a backlog, each
    look reads every message queued in ``queues`` once (LRANGE pages of 500).
    """

    def look(job_ids: Iterable[str]) -> dict[str, Lost]:
        in_broker = task_ids_in_broker(r, queues)
        found = (_lost_in(r, st, job_id, in_broker) for job_id in job_ids)
        return {lost.job_id: lost for lost in found if lost}

    now = time.time()
    candidates = [
        job_id
        for job_id, enqueued_at in jobs.unfinished_jobs(r, since=now - lookback_s).items()
        if enqueued_at is not None and enqueued_at <= now - min_age_s
    ]
    first = look(candidates) if candidates else {}
    if not first:
        return []
    sleep(confirm_s)
    confirmed = []
    for job_id, again in look(first).items():
        before = first[job_id]
        lost = Lost(  # only what both looks missed
            job_id,
            task=again.task if again.task == before.task else None,
            plan=before.plan and again.plan,
            batches={i: b for i, b in again.batches.items() if i in before.batches},
            finalize=before.finalize and again.finalize,
        )
        if lost:
            confirmed.append(lost)
    return confirmed


@dataclass(frozen=True)
class Orphan:
    """A message held unacknowledged (``tag``: kombu's delivery tag) by a worker that is gone."""

    tag: str
    task_id: str
    worker: str


def _orphans_now(r: redis.Redis) -> dict[str, Orphan]:
    held = _held(r)
    if not held:
        return {}
    # A message in the moment between kombu recording it and its worker's task_received has no
    # holder yet; the visibility timeout covers it.
    holders = dict(zip(held, r.mget([holder_key(tag) for tag in held]), strict=True))
    workers = sorted({w for w in holders.values() if w})
    pipe = r.pipeline(transaction=False)
    for worker in workers:
        pipe.exists(alive_key(worker))
    alive = dict(zip(workers, pipe.execute(), strict=True))
    return {
        tag: Orphan(tag, held[tag], worker)
        for tag, worker in holders.items()
        if worker and not alive[worker]
    }


def find_orphans(
    r: redis.Redis, *, confirm_s: float = 5.0, sleep: Callable[[float], object] = time.sleep
) -> list[Orphan]:
    """Messages held unacknowledged by workers that stopped refreshing their alive key
    (:mod:`workers.holders`), seen in two looks ``confirm_s`` apart.

    Without this their tasks would wait for the visibility timeout (7 h). Costs one HSCAN of
    the unacknowledged messages (one per task running anywhere) and two pipelined reads.
    """
    first = _orphans_now(r)
    if not first:
        return []
    sleep(confirm_s)
    again = _orphans_now(r)
    return [orphan for tag, orphan in first.items() if again.get(tag) == orphan]

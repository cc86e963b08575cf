"""Which worker holds which message, and which workers are alive: so the sweep can hand back the
work of a worker that died.

A task a worker has taken stays unacknowledged in Redis until it ends (``task_acks_late``). When
the worker dies (SIGKILL, the OOM killer, a lost machine), kombu puts the message back only after
the visibility timeout, which must outlast the longest task (7 h: a training run). Instead each
worker process keeps a key alive in Redis (``alive_key``, refreshed four times per
``BIRTHMARK_WORKER_ALIVE_TTL_S``, after which it expires) and records itself as the holder of each
message it receives (``holder_key``, by kombu's delivery tag: a retry of a task is another
message under the same task id). A message held unacknowledged by a worker whose key has expired
is orphaned: :func:`workers.sweeper.find_orphans` finds it and the sweep puts it back on its queue.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import redis
from celery.signals import task_postrun, task_received, worker_ready, worker_shutdown

from workers.runtime import redis_client
from workers.settings import get_settings

__all__ = ["alive_key", "holder_key"]

log = logging.getLogger(__name__)

_PREFIX = "birthmark:"
_stop = threading.Event()
_beating: set[str] = set()
_beating_lock = threading.Lock()
# A restarted worker keeps its name (compose restarts a container under the same hostname), so
# the name of this process's incarnation is what holds messages: the old one's key stays expired.
_INCARNATION = uuid.uuid4().hex[:8]
# Forget a holder only if it is still this worker (the sweep may have handed the message on).
_FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def alive_key(worker: str) -> str:
    return f"{_PREFIX}alive:{worker}"


def holder_key(delivery_tag: str) -> str:
    return f"{_PREFIX}holder:{delivery_tag}"


def _beat(worker: str) -> None:
    # Four beats per TTL: a worker this quiet is dead or cut off, not busy (the beat is a thread
    # of its own, and the model and decoders release the GIL).
    ttl_s = get_settings().worker_alive_ttl_s
    while True:
        try:
            redis_client().set(alive_key(worker), "1", px=int(ttl_s * 1000))
        except Exception as err:  # noqa: BLE001 - a dead beat would get the live worker's tasks taken
            log.warning("worker %s: could not refresh its alive key: %s", worker, err)
        if _stop.wait(ttl_s / 4):
            return


def _ensure_beating(worker: str) -> None:
    with _beating_lock:
        if worker in _beating:
            return
        _beating.add(worker)
    threading.Thread(target=_beat, args=(worker,), name="alive-beat", daemon=True).start()


def _incarnation(hostname: str | None) -> str | None:
    return f"{hostname}/{_INCARNATION}" if hostname else None


@worker_ready.connect
def _start_beating(sender: Any = None, **_: Any) -> None:
    worker = _incarnation(getattr(sender, "hostname", None))
    if worker:
        _ensure_beating(worker)


@worker_shutdown.connect
def _stop_beating(sender: Any = None, **_: Any) -> None:
    _stop.set()  # the key expires on its own; its tasks ended or were handed back by then


@task_received.connect
def _record_holder(request: Any = None, **_: Any) -> None:
    # On receipt, in the worker's main process: a message taken but not started yet is held too.
    worker = _incarnation(getattr(request, "hostname", None))
    tag = getattr(getattr(request, "message", None), "delivery_tag", None)
    if tag and worker:
        _ensure_beating(worker)  # also where worker_ready came late or not at all
        ttl = get_settings().visibility_timeout_s  # kombu's own restore takes over after it
        try:
            redis_client().set(holder_key(tag), worker, ex=ttl)
        except (redis.RedisError, OSError) as err:  # the visibility timeout still covers it
            log.warning("message %s: could not record its worker: %s", tag, err)


@task_postrun.connect
def _forget_holder(task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    if request is None or getattr(request, "is_eager", False):
        return  # run in process (``apply``): no message, no holder
    worker = _incarnation(getattr(request, "hostname", None))
    tag = (getattr(request, "properties", None) or {}).get("delivery_tag")
    if tag and worker:
        try:
            redis_client().eval(_FORGET, 1, holder_key(tag), worker)
        except (redis.RedisError, OSError) as err:
            log.warning("message %s: could not forget its worker: %s", tag, err)

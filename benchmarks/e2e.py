"""End-to-end scoring through a real Redis, a real S3 server and real worker processes, next to
the bare in-process path (the same ``score_batch`` over an in-memory store: no queue, no S3).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

import models
from benchmarks._stack import RedisServer, S3Server, Worker, cpu_seconds, reset_caches
from benchmarks._timing import percentile, side_by_side

__all__ = [
    "ExternalS3",
    "Stack",
    "bare_runner",
    "compare",
    "latency",
    "request_counts",
    "scoring_stack",
    "store_runner",
    "transport",
]

# What `birthmark train` writes into a card by default: the input size, colour constancy and
# test-time flips (four forward passes per image at 112 px: the FLOPs of one pass at 224 px).
_DEFAULTS = models.TrainConfig()
PRODUCTION_CARD = {
    "arch": _DEFAULTS.arch,
    "image_size": _DEFAULTS.image_size,
    "colour_constancy": _DEFAULTS.colour_constancy,
    "test_time_flips": _DEFAULTS.test_time_flips,
}
S3_NICE = 19  # the S3 server's session (autogroup) nice value; see scoring_stack


class MemoryStore:
    """Just enough of ``workers.store.Store`` for ``score_batch``: bytes by key, in memory."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return self.objects[key]


@dataclass(frozen=True)
class ExternalS3:
    """An S3 server the benchmark did not start (MinIO on another machine): it cannot count it."""

    url: str

    def requests(self) -> None:
        return None


@dataclass
class Stack:
    workdir: Path
    redis: RedisServer
    s3: S3Server | ExternalS3
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def upload(self, blobs: list[bytes], *, name: str = "img") -> list[str]:
        from workers.runtime import store

        prefix = f"uploads/{name}-{uuid.uuid4().hex[:6]}/"
        keys = [f"{prefix}{i:05d}.jpg" for i in range(len(blobs))]
        st = store()
        for key, data in zip(keys, blobs, strict=True):
            st.put(key, data)
        return keys

    def run_job(self, keys: list[str], *, poll_s: float = 1.0, timeout: float = 600.0) -> float:
        """Submit one job over ``keys`` and wait until its rows are readable; returns seconds.

        Waits as a client should: woken by the job's change notifications (``jobs.watching``),
        re-reading the record at most every ``poll_s`` otherwise.
        """
        from workers import jobs, results
        from workers.runtime import redis_client, store
        from workers.submit import submit_scoring

        r = redis_client()
        job_id = jobs.new_job_id("score")
        self.polls = 0
        with jobs.watching(r, job_id) as changed:
            start = time.perf_counter()
            submit_scoring(items=[{"key": k, "source": k} for k in keys], job_id=job_id)
            deadline = time.monotonic() + timeout
            while True:
                job = jobs.get_job(r, job_id)
                self.polls += 1
                if job and job["status"] in ("done", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} did not finish in {timeout} s: {job}")
                changed(poll_s)
        rows = list(results.read_rows(store(), job_id))
        elapsed = time.perf_counter() - start
        ok = sum(row["status"] == "ok" for row in rows)
        if job["status"] != "done" or ok != len(keys):
            raise RuntimeError(f"job {job_id}: {job['status']}, {ok}/{len(keys)} rows ok")
        return elapsed

    def cpu_seconds(self) -> dict[str, float | None]:
        """CPU seconds used so far by the score workers, the S3 server and Redis (None: unknown,
        such as an external S3 server)."""
        workers = [cpu_seconds(w.proc.pid) for w in self.workers]
        s3 = getattr(self.s3, "_proc", None)
        return {
            "worker": None if None in workers else sum(workers),
            "s3": cpu_seconds(s3.pid) if s3 is not None else None,
            "redis": cpu_seconds(self.redis.proc.pid),
        }

    def redis_commands(self) -> Counter[str]:
        import redis

        info = redis.Redis.from_url(self.redis.url).info("commandstats")
        return Counter({k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items()})

    def start_workers(self, n: int, **env: str) -> None:
        for w in self.workers:
            w.stop()
        self.workers = [
            Worker({**self.env, **env}, "score", self.workdir / f"worker-{i}.log").start()
            for i in range(n)
        ]


def _publish_champion(store) -> str:
    from workers import registry

    torch.manual_seed(0)
    net = models.build_model("resnet10_multimodal")
    weights, card = models.dump_checkpoint(net, PRODUCTION_CARD)
    model_id = registry.publish_model(store, weights, card)
    registry.promote(store, model_id, reason="benchmark")
    return model_id


@contextmanager
def scoring_stack(
    *,
    workers: int = 1,
    s3_endpoint: str | None = None,
    s3_http: str = "gunicorn",
    **worker_env: str,
) -> Iterator[Stack]:
    """Redis + S3 (moto) + ``workers`` score workers, a champion with the production
    card's preprocessing and test-time flips (untrained weights); env set in-process too.

    ``s3_endpoint`` uses that S3 server instead of starting moto here, in a new bucket
    (credentials from the ``AWS_*`` environment): the store off this machine, as in production.
    ``s3_http`` is the HTTP server in front of moto (``benchmarks._stack._serve_s3``).
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("BIRTHMARK_")}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bm-bench-") as tmp:
        workdir = Path(tmp)
        redis_server = RedisServer(workdir / "redis").start()
        stack.callback(redis_server.stop)
        if s3_endpoint:
            s3 = ExternalS3(s3_endpoint)
        else:
            # The S3 server stands in for a store on other machines: its own process at the
            # lowest CPU priority, so it runs on time the worker leaves idle, not the worker's.
            s3 = S3Server(process=True, nice=S3_NICE, http=s3_http).start()
            stack.callback(s3.stop)
        env = {
            "BIRTHMARK_REDIS_URL": redis_server.url,
            "BIRTHMARK_STORE": f"s3://bench-{uuid.uuid4().hex[:8]}",
            "BIRTHMARK_S3_ENDPOINT_URL": s3.url,
            "BIRTHMARK_HOME": str(workdir / "home"),
            "BIRTHMARK_DEVICE": "cpu",
            # The workers' periodic sweep (a Redis scan every 120 s) is kept out of the timed
            # rounds and the per-image request counts: it costs per interval, not per image, and
            # earlier runs had none (it was a beat task, and the stack runs no beat).
            "BIRTHMARK_SWEEP_INTERVAL_S": "0",
            **worker_env,
        }
        os.environ.update(env)
        reset_caches()
        stack.callback(_restore_env, saved)
        from workers.runtime import store

        _publish_champion(store())
        result = Stack(workdir, redis_server, s3, env)
        stack.callback(lambda: [w.stop() for w in result.workers])
        result.start_workers(workers)
        yield result


def _restore_env(saved: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith("BIRTHMARK_")]:
        del os.environ[key]
    os.environ.update(saved)
    reset_caches()


def bare_runner(blobs: list[bytes]) -> Callable[[], None]:
    """The worker's own ``score_batch`` + champion, in process, bytes from memory: one call."""
    objects = {f"uploads/bare/{i:05d}.jpg": data for i, data in enumerate(blobs)}
    return _in_process(MemoryStore(objects), list(objects))


def store_runner(keys: list[str]) -> Callable[[], None]:
    """The same in-process call reading ``keys`` from the stack's S3 server: no queue or worker."""
    from workers.runtime import store

    return _in_process(store(), keys)


def _in_process(source, keys: list[str]) -> Callable[[], None]:
    from workers.scoring import Item, score_batch
    from workers.settings import get_settings
    from workers.tasks.score import current_model

    settings = get_settings()
    scoring = current_model()  # loads the champion from S3 exactly as the worker does
    items = [Item(key, key) for key in keys]

    def run() -> None:
        rows = score_batch(
            source,
            items,
            model=lambda: scoring,
            allowed_prefixes=settings.score_prefix_list,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            threads=settings.score_prefetch_threads,
            fetch_nice=settings.score_fetch_nice,
        )
        if not all(row["status"] == "ok" for row in rows):
            raise RuntimeError(f"bare scoring failed: {rows[:2]}")

    return run


def _against_bare(
    blobs: list[bytes], name: str, run: Callable[[], object], repeats: int, bare=None
) -> dict[str, float]:
    """``run`` beside the bare path on ``blobs``: both rates, the ratio and its spread."""
    rounds: list[float] = []
    bare, rate, ratio = side_by_side(
        bare or bare_runner(blobs), run, len(blobs), repeats=repeats, rounds=rounds
    )
    return {"bare": bare, name: rate, "ratio": ratio, "ratio_min": min(rounds),
            "ratio_max": max(rounds)}  # fmt: skip


def transport(stack: Stack, blobs: list[bytes], *, repeats: int = 3) -> dict[str, float]:
    """The bare path over the S3 server next to it over memory: the store's share of the e2e loss.

    Same process, same ``score_batch``, no queue: what is left between this ratio and the e2e
    one is Celery, Redis and the worker process.
    """
    return _against_bare(blobs, "s3", store_runner(stack.upload(blobs)), repeats)


def compare(stack: Stack, blobs: list[bytes], *, repeats: int = 3) -> dict:
    """Queued jobs (submit -> rows readable) next to the bare path, interleaved run by run.

    The client waits on the job's change notifications, not a poll loop (which would steal CPU
    from the worker on a 2-core machine, or add up to its interval to every job).

    ``cpu_ms`` is where the CPU went, per image (medians of the timed runs): the bare path's
    process (``bare``); the queued path's ``worker``, ``s3`` server, ``redis`` and ``client``, and
    ``queued`` for all of those that could be counted (not an external S3 server). On one machine,
    each millisecond the S3 server takes is one the worker does not get.
    """
    keys = stack.upload(blobs)
    bare = bare_runner(blobs)
    used: dict[str, list[dict[str, float | None]]] = {"bare": [], "queued": []}

    def bare_run() -> None:
        start = time.process_time()
        bare()
        used["bare"].append({"bare": time.process_time() - start})

    def queued_run() -> None:
        before, client = stack.cpu_seconds(), time.process_time()
        stack.run_job(keys)
        after = stack.cpu_seconds()
        run: dict[str, float | None] = {"client": time.process_time() - client}
        for name in after:
            known = after[name] is not None and before[name] is not None
            run[name] = after[name] - before[name] if known else None
        run["queued"] = sum(v for v in run.values() if v is not None)
        used["queued"].append(run)

    result = _against_bare(blobs, "queued", queued_run, repeats, bare=bare_run)
    return {**result, "cpu_ms": _cpu_per_image(used["bare"][1:] + used["queued"][1:], len(blobs))}


def _cpu_per_image(runs: list[dict[str, float | None]], n: int) -> dict[str, float | None]:
    """Median ms of CPU per image of each name in ``runs`` (None where any run could not tell)."""
    per_image: dict[str, float | None] = {}
    for name in dict.fromkeys(k for run in runs for k in run):
        values = [run[name] for run in runs if name in run]
        known = [v for v in values if v is not None]
        per_image[name] = statistics.median(known) / n * 1000 if len(known) == len(values) else None
    return per_image


def request_counts(stack: Stack, blobs: list[bytes]) -> dict[str, float]:
    """Redis commands and S3 requests per image for one job (submit, worker, reading the rows).

    The benchmark's own status reads (one HGETALL each) and its subscription to the job's
    changes (measured once, alone) are subtracted; idle workers' BRPOP
    wake-ups (one per second each) are not, so short jobs show them. S3 figures are None for
    an external S3 server, which this benchmark cannot count.
    """
    from workers import jobs
    from workers.runtime import redis_client

    keys = stack.upload(blobs)
    before = stack.redis_commands()
    with jobs.watching(redis_client(), "no-such-job"):  # what the client's own wait sends
        pass
    watch = stack.redis_commands() - before
    watch["info"] -= 1
    redis_before, s3_before = stack.redis_commands(), stack.s3.requests()
    stack.run_job(keys)
    redis_delta = stack.redis_commands() - redis_before
    redis_delta["hgetall"] -= stack.polls
    redis_delta["info"] -= 1
    redis_delta.subtract(watch)
    n = len(blobs)
    counts: dict = {"redis_per_image": sum(redis_delta.values()) / n, "redis": dict(redis_delta)}
    if s3_before is None:
        return {**counts, "s3_per_image": None, "s3_get_per_image": None, "s3": None}
    s3_delta = stack.s3.requests() - s3_before
    return {
        **counts,
        "s3_per_image": sum(s3_delta.values()) / n,
        "s3_get_per_image": s3_delta["GET"] / n,
        "s3": dict(s3_delta),
    }


def latency(stack: Stack, blob: bytes, *, n: int = 50, warmup: int = 3) -> dict[str, float]:
    """Seconds from submit to result row for a one-image job on a warm worker: p50, p95, max."""
    (key,) = stack.upload([blob], name="one")
    for _ in range(warmup):
        stack.run_job([key])
    times = [stack.run_job([key]) for _ in range(n)]
    return {"p50": percentile(times, 50), "p95": percentile(times, 95), "max": max(times)}

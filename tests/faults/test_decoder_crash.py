"""Fault: an upload makes the image decoder crash the process (a segfault Python cannot catch), or
never return.

The first worker dies on it, with both batches it was running. They come back after the visibility
timeout; the worker that takes them sees that an earlier run never ended
(``workers.runs.counted_run``) and decodes each image in a child process. The child decoding the
file dies instead of the worker: that upload ends as a ``decoder_crashed`` error row, every other
as an ok row, and the worker goes on to the next job on its fast path.

A decoder that never returns does not kill the worker; after ``BIRTHMARK_SCORE_DECODE_HANG_S`` the
batch gives up on it (``DecoderHung``), leaves the stuck thread behind, and is retried the same way:
in child processes, where the child that hangs is killed after as long.

The faults are real: ``crashing_decoder/sitecustomize.py`` (on the workers' ``PYTHONPATH`` only)
makes the JPEG decoder SIGSEGV its process on a file carrying one marker and hang on another.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
import redis

from tests.faults._support import (
    assert_one_row_per_input,
    part_count,
    sample_jpeg,
    upload_samples,
    wait_for,
    wait_job,
)
from tests.faults.conftest import base_env, bound
from tests.workers.helpers import publish_tiny_champion

pytestmark = pytest.mark.integration

HOOK = Path(__file__).parent / "crashing_decoder"
MARKER = b"birthmark-test: this file crashes the decoder"
HANG_MARKER = b"birthmark-test: this file hangs the decoder"
N_INPUTS = 8
BATCH = 4


def _with_comment(jpeg: bytes, text: bytes) -> bytes:
    """``jpeg`` with a COM segment carrying ``text`` right after the start-of-image marker."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def _upload_with_bad_file(st, name: str, marker: bytes, at: int) -> tuple[list[str], str]:
    """Sample uploads with one marked file at position ``at``; returns (keys, the file's key)."""
    publish_tiny_champion(st)
    keys = upload_samples(st, name, N_INPUTS - 1)
    bad = f"uploads/{name}/bad.jpg"
    st.put(bad, _with_comment(sample_jpeg(99), marker))
    keys.insert(at, bad)
    return keys, bad


def _assert_one_decoder_crashed_row(st, job: dict, keys: list[str], bad: str, says: str) -> None:
    from workers import results

    assert job["status"] == "done", job
    rows = list(results.read_rows(st, job["id"]))
    assert_one_row_per_input(rows, keys)
    by_key = {row["key"]: row for row in rows}
    row = by_key.pop(bad)
    assert (row["status"], row["error_kind"]) == ("error", "decoder_crashed")
    assert says in row["message"]
    assert all(row["status"] == "ok" for row in by_key.values()), by_key
    assert (job["done"], job["errors"]) == (len(keys), 1)


def _next_job_is_all_ok(st, keys: list[str], bad: str) -> None:
    from workers import results
    from workers.submit import submit_scoring

    job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys if k != bad])
    assert wait_job(job_id, timeout=60)["status"] == "done"
    assert all(row["status"] == "ok" for row in results.read_rows(st, job_id))


def test_a_file_that_crashes_the_decoder_costs_one_row_not_the_workers(
    tmp_path, private_redis, workers
):
    from workers.runtime import store
    from workers.submit import submit_scoring

    env = base_env(
        tmp_path,
        private_redis.url,
        BIRTHMARK_SCORE_BATCH_SIZE=str(BATCH),
        BIRTHMARK_VISIBILITY_TIMEOUT_S="4",
    )
    worker_env = {**env, "PYTHONPATH": str(HOOK)}
    with bound(env):
        st = store()
        keys, poison = _upload_with_bad_file(st, "crash", MARKER, at=5)  # in the second batch

        first = workers.start(worker_env)
        job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys])
        wait_for(lambda: first.proc.poll() is not None, timeout=60, what="the first worker to die")
        assert first.proc.returncode == -signal.SIGSEGV, first.output()[-2000:]
        unfinished = N_INPUTS // BATCH - part_count(st, job_id)  # the poison's batch at least

        second = workers.start(worker_env)
        _assert_one_decoder_crashed_row(st, wait_job(job_id, timeout=120), keys, poison, "SIGSEGV")
        assert "decoding in child processes" in second.output()
        assert second.proc.poll() is None, "the second worker died too"

        # The batch counters are settled: the next job on this worker runs on the fast path.
        _next_job_is_all_ok(st, keys, poison)
        assert second.output().count("decoding in child processes") == unfinished


def test_a_file_that_hangs_the_decoder_costs_one_row_and_no_worker(
    tmp_path, private_redis, workers
):
    from workers.runtime import store
    from workers.submit import submit_scoring

    env = base_env(
        tmp_path,
        private_redis.url,
        BIRTHMARK_SCORE_BATCH_SIZE=str(BATCH),
        BIRTHMARK_SCORE_DECODE_HANG_S="3",
    )
    with bound(env):
        st = store()
        keys, stuck = _upload_with_bad_file(st, "hang", HANG_MARKER, at=2)  # in the first batch

        worker = workers.start({**env, "PYTHONPATH": str(HOOK)})
        job_id, _ = submit_scoring(items=[{"key": k, "source": k} for k in keys])
        job = wait_job(job_id, timeout=90)
        _assert_one_decoder_crashed_row(st, job, keys, stuck, "did not finish in 3 s")
        log = worker.output()
        assert "a decoder hung; retrying in child processes" in log
        assert "fetch/decode thread is stuck" in log
        assert worker.proc.poll() is None

        # The stuck thread stays behind, but the worker has a fresh pool for the next job.
        _next_job_is_all_ok(st, keys, stuck)


def test_runs_of_a_batch_that_never_ended_are_counted(redis_server):
    from workers.isolated_decode import DecoderHung
    from workers.runs import counted_run

    r = redis.Redis.from_url(redis_server.url)
    job_id = f"score-{uuid.uuid4().hex[:8]}"
    key = f"birthmark:job:{job_id}:batch:0:runs"

    def run(part: str = "batch:0", error: type[BaseException] | None = None) -> bool:
        with counted_run(r, job_id, part, label="test") as isolate:
            if error is not None:
                raise error("in the block")
        return isolate

    assert run() is False
    assert not r.exists(key)  # an ended run leaves nothing behind
    with pytest.raises(ValueError):
        run(error=ValueError)  # a failure ends the run too: the retry decodes in process
    assert run() is False
    with pytest.raises(DecoderHung):
        run(error=DecoderHung)  # a hung decoder keeps the run open, as a death does
    assert 0 < r.ttl(key) <= 7 * 24 * 3600
    assert run("batch:1") is False  # other batches do not see it
    assert run() is True  # the retry does, and decodes in child processes


_CONCURRENT_CRASHES = """
import collections, io, sys
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from workers.isolated_decode import DecoderCrashed, decode_in_child

def jpeg(size):
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 90, 80)).save(buf, "JPEG")
    return buf.getvalue()

def one(i):
    good = jpeg((320, 240))
    data = good[:2] + b"\\xff\\xfe" + (len(MARKER) + 2).to_bytes(2, "big") + MARKER + good[2:]
    try:
        decode_in_child(data if i % 4 == 0 else good, max_pixels=10**8, timeout_s=30)
        return "ok"
    except DecoderCrashed as err:
        return str(err)

if __name__ == "__main__":
    with ThreadPoolExecutor(4) as pool:
        print(dict(collections.Counter(pool.map(one, range(int(sys.argv[1]))))))
"""


def test_children_decoding_in_parallel_threads_report_the_signal_that_killed_them(tmp_path):
    # A scoring batch decodes in four fetch threads. multiprocessing reads a forkserver child's
    # exit status once; unguarded, a start() in one thread could read it before the join() in
    # another, which then saw EOF and reported "exit code 255" for a SIGSEGV (3 of 20 here).
    import ast
    import os
    import subprocess
    import sys

    from benchmarks._stack import REPO

    script = tmp_path / "concurrent_crashes.py"
    script.write_text(f"MARKER = {MARKER!r}\n" + _CONCURRENT_CRASHES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HOOK)])}
    out = subprocess.run(
        [sys.executable, str(script), "96"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=240, check=True,
    ).stdout  # fmt: skip
    outcomes = ast.literal_eval(out.strip().splitlines()[-1])
    assert outcomes == {"ok": 72, "the decoder crashed (killed by SIGSEGV)": 24}, outcomes

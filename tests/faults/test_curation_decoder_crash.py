"""Fault: a pulled image makes the decoder crash a curation worker (a segfault), or never return.

Curation decodes archive images, a more trusted source than uploads, but a crafted or damaged file
in a pull would otherwise take down every curation worker that picks the job up, for good. The
worker that takes the job back after such a death (``workers.runs.counted_run``) decodes each
image in a child process: the file that kills its child is an unreadable, rejected image in the
version and every other image is scored as usual. A decoder that never returns is given up on
after ``BIRTHMARK_CURATION_DECODE_HANG_S``, and the job is retried the same way.

The faults are real: ``crashing_decoder/sitecustomize.py`` (on the workers' ``PYTHONPATH`` only)
makes the JPEG decoder SIGSEGV its process on a file carrying one marker and hang on another.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.faults._support import wait_for, wait_job
from tests.faults.conftest import base_env, bound

pytestmark = pytest.mark.integration

HOOK = Path(__file__).parent / "crashing_decoder"
MARKER = b"birthmark-test: this file crashes the decoder"
HANG_MARKER = b"birthmark-test: this file hangs the decoder"
N_IMAGES = 12
BAD_ID = "ISIC_9000004"


def _with_comment(jpeg: bytes, text: bytes) -> bytes:
    """``jpeg`` with a COM segment carrying ``text`` right after the start-of-image marker."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def _import_pull_with_bad_file(st, folder: Path, marker: bytes) -> None:
    """A pull of ``N_IMAGES`` synthetic archive images, one of them carrying ``marker``."""
    from curation.synthetic import write_isic_sample
    from workers.pulls import import_folder

    write_isic_sample(folder, n=N_IMAGES, seed=2)
    bad = folder / f"{BAD_ID}.jpg"
    bad.write_bytes(_with_comment(bad.read_bytes(), marker))
    import_folder(st, folder, manifest=folder / "metadata.csv")


def _submit_curation() -> str:
    from workers.submit import submit_task_job
    from workers.tasks.curation import run

    job_id, _ = submit_task_job(run, kind="curate", params={"pulls": None})
    return job_id


def _assert_bad_image_unreadable(st, job: dict, says: str) -> None:
    from workers.training_run import load_manifest

    assert job["status"] == "done", job
    _, manifest = load_manifest(st, job["result"]["version"])
    assert len(manifest) == N_IMAGES
    by_id = manifest.set_index("isic_id")
    bad = by_id.loc[BAD_ID]
    assert bad["verdict"] == "rejected"
    assert "unreadable" in bad["phone_reasons"] and says in bad["phone_reasons"], bad
    others = by_id.drop(index=BAD_ID)
    assert not others["phone_reasons"].str.contains("unreadable").any()
    assert others["phash"].notna().all()  # every other image was decoded and hashed


def test_a_pulled_file_that_crashes_the_decoder_costs_one_image_not_the_workers(
    tmp_path, private_redis, workers
):
    from workers.runtime import store

    env = base_env(tmp_path, private_redis.url, BIRTHMARK_VISIBILITY_TIMEOUT_S="4")
    worker_env = {**env, "PYTHONPATH": str(HOOK)}
    with bound(env):
        st = store()
        _import_pull_with_bad_file(st, tmp_path / "pull", MARKER)

        first = workers.start(worker_env, queues="curation")
        job_id = _submit_curation()
        wait_for(lambda: first.proc.poll() is not None, timeout=60, what="the first worker to die")
        assert first.proc.returncode == -signal.SIGSEGV, first.output()[-2000:]

        second = workers.start(worker_env, queues="curation")
        _assert_bad_image_unreadable(st, wait_job(job_id, timeout=120), "SIGSEGV")
        assert "1 earlier run(s) died or hung; decoding in child processes" in second.output()
        assert second.proc.poll() is None, "the second worker died too"


def test_a_pulled_file_that_hangs_the_decoder_costs_one_image_and_no_worker(
    tmp_path, private_redis, workers
):
    from workers.runtime import store

    env = base_env(tmp_path, private_redis.url, BIRTHMARK_CURATION_DECODE_HANG_S="3")
    with bound(env):
        st = store()
        _import_pull_with_bad_file(st, tmp_path / "pull", HANG_MARKER)

        worker = workers.start({**env, "PYTHONPATH": str(HOOK)}, queues="curation")
        job = wait_job(_submit_curation(), timeout=120)
        _assert_bad_image_unreadable(st, job, "did not finish in 3 s")
        log = worker.output()
        assert "a decoder hung; retrying in child processes" in log
        assert "decoding in child processes" in log
        assert worker.proc.poll() is None

"""Counted runs: work taken back after its worker died decodes carefully the second time.

A worker that dies in the middle of a task (killed, out of memory, or a decoder that crashed the
process on one of the task's files) cannot say so. Each run of a piece of work is therefore
counted in Redis when it starts and when it ends (:func:`workers.jobs.start_run`); the run that
finds an earlier one that never ended decodes each image in a child process
(:mod:`workers.isolated_decode`), so the file that crashes a decoder costs one row, not the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from workers import jobs
from workers.isolated_decode import DecoderHung

__all__ = ["counted_run"]

log = logging.getLogger(__name__)


@contextmanager
def counted_run(r: redis.Redis, job_id: str, part: str, *, label: str) -> Iterator[bool]:
    """Count the block as a run of ``part`` of a job; yields True if an earlier run never ended.

    True means: decode in child processes. The run ends with the block, however it ends, except
    on :class:`DecoderHung`: a hung decoder leaves the run counted as not ended, as a death
    would, so the retry decodes in child processes too. ``label`` names the work in the log.
    """
    died = jobs.start_run(r, job_id, part)
    if died:
        log.warning("%s: %d earlier run(s) died or hung; decoding in child processes", label, died)
    try:
        yield died > 0
    except DecoderHung:
        log.error("%s: a decoder hung; retrying in child processes", label)
        raise  # the run stays counted as not ended
    except BaseException:
        jobs.end_run(r, job_id, part)
        raise
    jobs.end_run(r, job_id, part)

"""A worker process's inference threads: chunks of ready images from every running batch.

A score worker runs two batch tasks in threads. When each fed the model its own chunks in turn, a
chunk held only its own batch's ready images (8-9 on average in a traced worker, against 14-16 in
the bare path), and small chunks cost CPU: one forward pass with test-time flips at one torch
thread took 12.0 ms per image for 4 images, 10.7 for 8 and 9.9 for 16. Here batch threads hand over
decoded images (:meth:`Inference.submit`) and one thread takes whatever is ready when the model is
free, up to ``chunk`` images from any batch: when images arrive faster than the model scores them,
the queue that builds up during one forward pass becomes the next chunk.

The torch thread count follows the fetch threads' need for cores: ``threads`` (all cores but one by
default) while images are still being fetched, ``spare_threads`` (every core) for a chunk when no
more are announced (a single upload, the end of a job, between batches) or a whole next chunk is
already waiting. On 2 cores queued scoring of 1024x768 photos ran 16-22% more images per second than
with one thread throughout (paired stacks: 56.5 / 52.5 / 57.3 against 48.1 / 49.1 / 47.6 img/s), and
4000x3000 no fewer; two threads throughout lost to one by starving the decoders. The count is
looked at again between a chunk's test-time views (four forward passes, ~80 ms each on one thread
here): a chunk begun on one thread while images were still coming takes every core for its
remaining views once nothing more is announced. A worker sees only its two running batches, so the
fetch threads often finish in the middle of a chunk; this halved the idle CPU of queued scoring
(7.6% to 3.2% of 2 cores, 10 alternated rounds of 200 x 1024x768 in one stack) and left the bare
path's speed as it was.

``streams`` runs several such threads on the one queue, each with its own torch thread count (one
each on 2 cores). While one scores a chunk, another takes the next only once a whole chunk is
waiting (or nothing more is announced), so chunks stay full; they then run side by side, one core
each, instead of one chunk on both cores. On 2 cores, 6 paired stacks of 200 × 1024x768: the bare
path 64.1-75.5 img/s (median 70.1) against 55.0-72.6 (57.1) with one stream, its CPU per image
steadier (25.6-30.0 ms against 27.1-35.5); queued 52.4-63.8 (58.7) against 48.9-56.8 (52.3). On
60 × 4000x3000, short of CPU for decoding, about the same. The queued path gains less (a worker sees
two batches at a time, the bare path the whole job), so the e2e ratio falls: one stream by default
(``BIRTHMARK_SCORE_INFERENCE_STREAMS``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import models

__all__ = ["Inference", "default_inference"]

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    predictor: models.Predictor
    image: np.ndarray
    metadata: Mapping[str, Any]
    result: Future[float]


class Inference:
    """Scores submitted images in chunks of up to ``chunk``, one model per chunk.

    When fewer than ``min_chunk`` images are ready and batches have announced more
    (:meth:`expect`), the thread waits for them rather than run a small chunk; once nothing more
    is announced, it runs what it has (a single upload is scored at once). A batch thread announces
    its images, then for each one either submits it or :meth:`skip`\\ s it (an error row, or the
    rest of a batch that failed), so the thread never waits for an image that will not come.
    """

    def __init__(
        self,
        *,
        chunk: int = 16,
        min_chunk: int = 4,
        threads: int | None = None,
        spare_threads: int | None = None,
        streams: int = 1,
    ) -> None:
        if not 1 <= min_chunk <= chunk:
            raise ValueError(f"need 1 <= min_chunk <= chunk, got {min_chunk} and {chunk}")
        self.chunk, self.min_chunk = chunk, min_chunk
        # torch threads for a chunk while images are still being fetched, and when they are not
        # (nothing more announced, or a whole chunk already waiting): None leaves torch's count.
        self.threads = threads
        self.spare_threads = (spare_threads or threads) if threads is not None else None
        self.thread_counts: deque[int] = deque(maxlen=1000)  # threads used by the last chunks
        self.chunks: deque[int] = deque(maxlen=1000)  # sizes of the last chunks run
        self._cond = threading.Condition()
        self._ready: deque[_Waiting] = deque()
        self._expected = 0
        self._closed = False
        self.streams = streams
        self._running = 0  # chunks being scored now
        self._threads: list[threading.Thread] = []

    def expect(self, n: int) -> None:
        """``n`` more images will be submitted or skipped."""
        with self._cond:
            self._expected += n

    def skip(self, n: int = 1) -> None:
        """``n`` announced images will not come after all."""
        if n:
            with self._cond:
                self._expected -= n
                self._cond.notify_all()

    def submit(
        self, predictor: models.Predictor, image: np.ndarray, metadata: Mapping[str, Any]
    ) -> Future[float]:
        """Queue one announced image (a ``predictor.prepare`` crop); its probability arrives in
        the future, or the exception ``predict`` raised for its chunk."""
        waiting = _Waiting(predictor, image, metadata, Future())
        with self._cond:
            if self._closed:
                raise RuntimeError("inference thread closed")
            self._start()
            self._expected -= 1
            self._ready.append(waiting)
            self._cond.notify_all()
        return waiting.result

    @property
    def queued(self) -> int:
        """Images submitted and not yet taken into a chunk."""
        with self._cond:
            return len(self._ready)

    def close(self) -> None:
        """Stop the threads once the images already queued are scored."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _start(self) -> None:
        # Started by a batch thread, not a fetch thread: it inherits the caller's nice value.
        if not self._threads:
            for i in range(self.streams):
                thread = threading.Thread(target=self._run, name=f"inference-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _take(self) -> tuple[list[_Waiting], bool] | None:
        """The next chunk, and whether the fetch threads can spare their cores meanwhile."""
        with self._cond:
            while not self._closed and not self._may_take():
                self._cond.wait()
            if not self._ready:
                return None  # closed
            self._running += 1
            first = self._ready[0].predictor
            taken: list[_Waiting] = []
            while self._ready and len(taken) < self.chunk and self._ready[0].predictor is first:
                taken.append(self._ready.popleft())
            # Several streams: every core only when nothing else is left to do.
            whole_next = self.streams == 1 and len(self._ready) >= self.chunk
            return taken, self._nothing_else() or whole_next

    def _nothing_else(self) -> bool:
        """Whether nothing is left to fetch (under the lock); with several streams, also nothing
        for another stream to score."""
        if self.streams > 1:
            return self._running == 1 and self._expected == 0 and not self._ready
        return self._expected == 0

    def _may_take(self) -> bool:
        """Whether a thread may take a chunk now (under the lock): at least ``min_chunk`` ready, or
        whatever is ready once nothing more is announced; while another chunk is being scored, a
        whole one."""
        if not self._ready:
            return False
        if self._running and self._expected > 0:  # another chunk runs: only a whole one
            return len(self._ready) >= self.chunk
        return len(self._ready) >= self.min_chunk or self._expected <= 0

    def _done(self) -> None:
        """A chunk is scored: another thread may take a partial one now."""
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def _run(self) -> None:
        current = None

        def use(threads: int | None) -> None:
            nonlocal current
            if threads is not None and threads != current:
                torch.set_num_threads(threads)  # this thread's count (OpenMP keeps one per thread)
                current = threads

        def between_views() -> None:  # the fetch threads may have finished since the chunk began
            if current != self.spare_threads:
                with self._cond:
                    done = self._nothing_else()
                if done:
                    use(self.spare_threads)

        while (next_chunk := self._take()) is not None:
            taken, spare = next_chunk
            use(self.spare_threads if spare else self.threads)
            self.thread_counts.append(torch.get_num_threads())
            try:
                probs = taken[0].predictor.predict(
                    [w.image for w in taken],
                    [dict(w.metadata) for w in taken],
                    between=between_views,
                )
            except BaseException as err:  # every batch with an image here fails (and retries)
                log.exception("predict failed on a chunk of %d", len(taken))
                for w in taken:
                    w.result.set_exception(err)
                continue
            finally:
                self._done()
            self.chunks.append(len(taken))
            for w, p in zip(taken, probs, strict=True):
                w.result.set_result(float(p))


_default: Inference | None = None
_default_pid: int | None = None
_default_lock = threading.Lock()


def default_inference() -> Inference:
    """This process's inference threads (a forked child gets its own)."""
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            from workers.settings import get_settings

            settings = get_settings()
            fixed, streams = settings.score_torch_threads, settings.score_inference_streams
            cpus = models.available_cpus()
            # Auto: the streams share the cores out; one stream leaves one to the fetch threads.
            busy = settings.score_torch_thread_count if fixed or streams == 1 else cpus // streams
            # Unless a count is set, a chunk takes every core when the fetch threads need none.
            _default = Inference(threads=max(1, busy), spare_threads=fixed or cpus, streams=streams)
            _default_pid = os.getpid()
        return _default

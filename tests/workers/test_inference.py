"""The inference thread alone: chunk sizes, waiting for announced images, one model per chunk."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from workers.inference import Inference


class _Model:
    """Stands in for a Predictor: probability = the image's value; records each chunk."""

    def __init__(self, *, fail_on: float | None = None, gate: threading.Event | None = None):
        self.chunks: list[list[float]] = []
        self.fail_on, self.gate = fail_on, gate

    def predict(self, images, metadata, between=None):
        if self.gate is not None:
            assert self.gate.wait(10)
        values = [float(im[0]) for im in images]
        self.chunks.append(values)
        if self.fail_on in values:
            raise RuntimeError("bad chunk")
        return np.array(values) / 10


def _image(value: float) -> np.ndarray:
    return np.array([value])


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def inference():
    engine = Inference(chunk=4, min_chunk=3)
    yield engine
    engine.close()


def test_waits_for_min_chunk_while_more_are_announced_then_runs_what_it_has(inference):
    model = _Model()
    inference.expect(5)
    first = [inference.submit(model, _image(v), {}) for v in (1, 2)]
    time.sleep(0.1)
    assert model.chunks == [] and inference.queued == 2  # two of the announced five: it waits
    third = inference.submit(model, _image(3), {})
    assert [f.result(10) for f in (*first, third)] == [0.1, 0.2, 0.3]
    last = inference.submit(model, _image(4), {})
    time.sleep(0.1)
    assert not last.done()  # one more is announced
    inference.skip()  # ...and will not come: what is queued runs
    assert last.result(10) == 0.4
    assert model.chunks == [[1, 2, 3], [4]]


def test_images_queued_while_the_model_is_busy_form_the_next_chunk_up_to_its_size(inference):
    gate = threading.Event()
    model = _Model(gate=gate)
    inference.expect(1)
    busy = inference.submit(model, _image(0), {})  # nothing more announced: runs alone, held
    _wait_for(lambda: inference.queued == 0)
    inference.expect(6)
    rest = [inference.submit(model, _image(v), {}) for v in range(1, 7)]
    gate.set()
    assert busy.result(10) == 0.0 and [f.result(10) for f in rest] == [v / 10 for v in range(1, 7)]
    assert model.chunks == [[0], [1, 2, 3, 4], [5, 6]]


def test_a_chunk_holds_one_model_and_a_failed_chunk_fails_only_its_images(inference):
    good, bad = _Model(), _Model(fail_on=2)
    gate = threading.Event()
    held = _Model(gate=gate)
    inference.expect(1)
    inference.submit(held, _image(0), {})
    _wait_for(lambda: inference.queued == 0)
    inference.expect(4)
    a = inference.submit(good, _image(1), {})
    b = [inference.submit(bad, _image(v), {}) for v in (2, 3)]
    c = inference.submit(good, _image(4), {})
    gate.set()
    assert a.result(10) == 0.1 and c.result(10) == 0.4
    for f in b:
        with pytest.raises(RuntimeError, match="bad chunk"):
            f.result(10)
    assert good.chunks == [[1], [4]] and bad.chunks == [[2, 3]]
    inference.expect(4)  # the failed chunk is over: a partial chunk of 3 runs, one still announced
    partial = [inference.submit(good, _image(v), {}) for v in (5, 6, 7)]
    assert [f.result(10) for f in partial] == [0.5, 0.6, 0.7]
    inference.skip()


def test_close_stops_the_thread_and_refuses_more_work():
    engine = Inference(chunk=2, min_chunk=1)
    engine.expect(1)
    assert engine.submit(_Model(), _image(5), {}).result(10) == 0.5
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(_Model(), _image(1), {})
    with pytest.raises(ValueError, match="min_chunk <= chunk"):
        Inference(chunk=2, min_chunk=3)


def test_a_chunk_takes_the_spare_cores_when_the_fetch_threads_need_none():
    import torch

    class _Counting(_Model):
        def predict(self, images, metadata, between=None):
            self.threads.append(torch.get_num_threads())  # the inference thread's own count
            return super().predict(images, metadata, between)

    engine = Inference(chunk=4, min_chunk=1, threads=1, spare_threads=2)
    gate = threading.Event()
    model = _Counting(gate=gate)
    model.threads = []
    try:
        engine.expect(10)
        first = engine.submit(model, _image(0), {})  # nine more are coming: one thread
        _wait_for(lambda: engine.queued == 0)
        rest = [engine.submit(model, _image(v), {}) for v in range(1, 9)]
        gate.set()  # 4 taken with 4 more waiting (a whole chunk ahead): two threads
        for f in (first, *rest):  # then the last 4 while one is still announced: one thread
            f.result(10)
        engine.skip()
        engine.expect(1)
        engine.submit(model, _image(9), {}).result(10)  # a single upload: two threads
    finally:
        engine.close()
    assert model.chunks == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert model.threads == [1, 2, 1, 2]
    assert list(engine.thread_counts) == [1, 2, 1, 2]


def test_a_chunk_takes_the_spare_cores_between_views_once_the_fetching_is_done():
    import torch

    class _Views(_Model):
        """Four views per chunk, as with test-time flips: records the thread count of each."""

        def predict(self, images, metadata, between=None):
            self.threads.append([torch.get_num_threads()])
            assert self.gate.wait(10)
            for _ in range(3):
                between()
                self.threads[-1].append(torch.get_num_threads())
            return super().predict(images, metadata)

    engine = Inference(chunk=4, min_chunk=2, threads=1, spare_threads=2)
    model = _Views()
    model.gate, model.threads = threading.Event(), []
    try:
        engine.expect(4)
        first = [engine.submit(model, _image(v), {}) for v in (0, 1)]  # two more coming: 1 thread
        _wait_for(lambda: engine.queued == 0)
        engine.submit(model, _image(2), {})  # one still announced: the views stay on one thread
        model.gate.set()
        _wait_for(lambda: first[0].done())
        model.gate.clear()
        engine.expect(2)
        engine.submit(model, _image(3), {})  # three announced (1 + 2): the next chunk on one...
        _wait_for(lambda: engine.queued == 0)
        last = [engine.submit(model, _image(v), {}) for v in (4, 5)]  # nothing more: every core
        model.gate.set()
        assert [f.result(10) for f in last] == [0.4, 0.5]
    finally:
        engine.close()
    assert model.chunks == [[0, 1], [2, 3], [4, 5]]
    assert model.threads == [[1, 1, 1, 1], [1, 2, 2, 2], [2, 2, 2, 2]]
    assert list(engine.thread_counts) == [1, 1, 2]  # the count each chunk began with


def test_two_streams_score_whole_chunks_side_by_side():
    import torch

    class _Held(_Model):
        """Holds the chunk with image 0 until released; records each chunk's thread and count."""

        def predict(self, images, metadata, between=None):
            self.seen.append((float(images[0][0]), threading.current_thread().name,
                              torch.get_num_threads()))  # fmt: skip
            if float(images[0][0]) == 0:
                assert self.hold.wait(10)
            return super().predict(images, metadata, between)

    engine = Inference(chunk=4, min_chunk=2, threads=1, spare_threads=2, streams=2)
    model = _Held()
    model.hold, model.seen = threading.Event(), []
    try:
        engine.expect(9)
        first = [engine.submit(model, _image(v), {}) for v in (0, 1)]  # taken, and held
        _wait_for(lambda: engine.queued == 0)
        middle = [engine.submit(model, _image(v), {}) for v in (2, 3, 4)]
        time.sleep(0.1)
        assert engine.queued == 3  # a chunk is running and more are coming: only a whole one
        middle.append(engine.submit(model, _image(5), {}))
        assert [f.result(10) for f in middle] == [0.2, 0.3, 0.4, 0.5]  # beside the held one
        last = [engine.submit(model, _image(v), {}) for v in (6, 7)]
        engine.skip()  # nothing more is announced: what is ready runs, on one core of two
        assert [f.result(10) for f in last] == [0.6, 0.7]
        assert not any(f.done() for f in first)
        model.hold.set()
        assert [f.result(10) for f in first] == [0.0, 0.1]
        engine.expect(1)
        assert engine.submit(model, _image(8), {}).result(10) == 0.8  # alone: every core
    finally:
        engine.close()
    assert model.chunks == [[2, 3, 4, 5], [6, 7], [0, 1], [8]]
    (_, held, *_), (_, beside, *_) = model.seen[:2]
    assert held != beside
    assert [threads for *_, threads in model.seen] == [1, 1, 1, 2]


@pytest.mark.parametrize(("streams", "torch_threads"), [(1, "0"), (2, "0"), (2, "3")])
def test_the_worker_inference_follows_its_settings(monkeypatch, streams, torch_threads):
    import models
    from workers import inference
    from workers.settings import get_settings

    monkeypatch.setenv("BIRTHMARK_SCORE_INFERENCE_STREAMS", str(streams))
    monkeypatch.setenv("BIRTHMARK_SCORE_TORCH_THREADS", torch_threads)
    monkeypatch.setattr(inference, "_default", None)
    get_settings.cache_clear()
    try:
        engine = inference.default_inference()
    finally:
        get_settings.cache_clear()
    cpus = models.available_cpus()
    busy = {(1, "0"): max(1, cpus - 1), (2, "0"): max(1, cpus // 2), (2, "3"): 3}
    assert engine.streams == streams
    assert engine.threads == busy[streams, torch_threads]
    assert engine.spare_threads == (3 if torch_threads == "3" else cpus)

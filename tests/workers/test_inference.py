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

    def predict(self, images, metadata):
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
        def predict(self, images, metadata):
            self.threads.append(torch.get_num_threads())  # the inference thread's own count
            return super().predict(images, metadata)

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

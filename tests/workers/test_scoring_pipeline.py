"""score_batch's pipeline on an in-memory store: order, chunking, failures, the shared pool."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import models
from tests.workers.helpers import good_jpeg
from workers import scoring
from workers.inference import Inference
from workers.scoring import Item, ScoringModel, score_batch
from workers.store import ObjectMissing, StoreUnavailable


class _Store:
    def __init__(self, objects: dict[str, bytes], *, down: set[str] = frozenset()) -> None:
        self.objects, self.down = objects, down

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        if key in self.down:
            raise StoreUnavailable(f"{key}: connection reset")
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectMissing(key) from None


class _Predictor:
    """Records each chunk it is given; the probability is the image width, to check alignment."""

    def __init__(self) -> None:
        self.chunks: list[int] = []
        self.prepared_in: set[str] = set()  # names of the threads that prepared images

    def prepare(self, image: Image.Image) -> Image.Image:
        self.prepared_in.add(threading.current_thread().name)
        return image

    def predict(self, images, metadata=None, between=None) -> np.ndarray:
        self.chunks.append(len(images))
        return np.array([im.size[0] / 1000 for im in images])


def _score(store, items, predictor, **kwargs):
    scoring = ScoringModel("m1", predictor, threshold=0.5)
    return score_batch(
        store, items, model=lambda: scoring, max_bytes=1 << 24, max_pixels=10**8, **kwargs
    )


def test_rows_in_input_order_with_chunks_between_min_and_max():
    widths = [64 + 8 * i for i in range(40)]
    objects = {f"uploads/{i:02d}.jpg": good_jpeg(i, size=(w, 48)) for i, w in enumerate(widths)}
    items = [Item(k, k) for k in objects]
    items.insert(7, Item("uploads/gone.jpg", "uploads/gone.jpg"))
    predictor = _Predictor()
    inference = Inference(chunk=6, min_chunk=2)
    rows = _score(_Store(objects), items, predictor, threads=3, inference=inference)
    inference.close()
    assert [r["key"] for r in rows] == [it.source for it in items]
    assert rows[7]["error_kind"] == "missing"
    ok = [r for r in rows if r["status"] == "ok"]
    assert [round(r["probability"] * 1000) for r in ok] == widths
    assert sum(predictor.chunks) == 40 and max(predictor.chunks) <= 6


def test_fetch_threads_prepare_the_crops_and_rows_match_predict_on_the_images():
    torch.manual_seed(0)
    card = {"image_size": 32, "colour_constancy": "shades_of_gray"}
    predictor = models.Predictor(models.build_model("resnet10_multimodal"), card, device="cpu")
    prepared_in: set[str] = set()
    prepare = predictor.prepare

    def spy(image):
        prepared_in.add(threading.current_thread().name)
        return prepare(image)

    predictor.prepare = spy
    blobs = [good_jpeg(i, size=(64 + 16 * i, 48)) for i in range(7)]
    objects = {f"uploads/{i}.jpg": b for i, b in enumerate(blobs)}
    rows = _score(_Store(objects), [Item(k, k) for k in objects], predictor, threads=2)
    assert prepared_in and threading.current_thread().name not in prepared_in
    images = [models.decode_image(b, max_pixels=10**8).image for b in blobs]
    expected = predictor.predict(images, [{}] * len(images))
    assert [r["probability"] for r in rows] == [round(float(p), 6) for p in expected]


def test_a_decoder_bug_on_one_file_is_its_row_and_the_rest_are_scored(monkeypatch, caplog):
    from workers import scoring

    objects = {f"uploads/{i}.jpg": good_jpeg(i) for i in range(3)}
    decode = scoring.decode_for_scoring

    def buggy(data, **kw):
        if data == objects["uploads/1.jpg"]:
            raise TypeError("unexpected tag type")  # what no decoder documents
        return decode(data, **kw)

    monkeypatch.setattr(scoring, "decode_for_scoring", buggy)
    rows = _score(_Store(objects), [Item(k, k) for k in objects], _Predictor(), threads=2)
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[1]["error_kind"] == "unreadable" and "TypeError" in rows[1]["message"]
    assert "unexpected decoder error" in caplog.text


def test_transient_failure_escapes_and_the_pool_keeps_working():
    objects = {f"uploads/{i:02d}.jpg": good_jpeg(i, size=(64, 48)) for i in range(12)}
    items = [Item(k, k) for k in objects]
    with pytest.raises(StoreUnavailable):
        _score(_Store(objects, down={"uploads/05.jpg"}), items, _Predictor(), threads=2)
    rows = _score(_Store(objects), items, _Predictor(), threads=2)
    assert [r["status"] for r in rows] == ["ok"] * 12


class _HeldPredictor(_Predictor):
    """Its first chunk waits for ``release``: the model is busy meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release, self.widths = threading.Event(), threading.Event(), []

    def predict(self, images, metadata=None, between=None) -> np.ndarray:
        if not self.chunks:
            self.entered.set()
            assert self.release.wait(30)
        self.widths.append([im.size[0] for im in images])
        return super().predict(images, metadata)


def test_images_of_two_batches_decoded_while_the_model_is_busy_share_its_next_chunk():
    widths = [64 + 8 * i for i in range(13)]
    objects = {f"uploads/{i:02d}.jpg": good_jpeg(i, size=(w, 48)) for i, w in enumerate(widths)}
    keys = list(objects)
    predictor, inference, results = _HeldPredictor(), Inference(chunk=16, min_chunk=2), {}

    def run(name: str, part: list[str]) -> None:
        items = [Item(k, k) for k in part]
        results[name] = _score(_Store(objects), items, predictor, inference=inference)

    first = threading.Thread(target=run, args=("first", keys[:1]))
    first.start()
    assert predictor.entered.wait(10)  # the one-image batch is on the model, held there
    a, b = keys[1:7] + ["uploads/gone.jpg"], keys[7:]
    threads = [threading.Thread(target=run, args=(n, part)) for n, part in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while inference.queued < 12:
        assert time.monotonic() < deadline, inference.queued
        time.sleep(0.01)
    predictor.release.set()
    for t in (first, *threads):
        t.join(30)
    inference.close()
    # The two batches' twelve images went to the model together, in the order they were handed
    # over; each batch still got its own rows, in its own order.
    assert predictor.chunks == [1, 12]
    assert sorted(predictor.widths[1]) == widths[1:]
    assert [r["key"] for r in results["a"]] == a and [r["key"] for r in results["b"]] == b
    assert [r["status"] for r in results["a"]] == ["ok"] * 6 + ["error"]
    assert [round(r["probability"] * 1000) for r in results["a"][:6]] == widths[1:7]
    assert [round(r["probability"] * 1000) for r in results["b"]] == widths[7:]


class _PriorityRecordingStore(_Store):
    """Records the nice value of each thread that fetches."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__(objects)
        self.nice: set[int] = set()

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return super().get(key, max_bytes=max_bytes)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux-only")
def test_fetch_threads_run_at_a_lower_priority_than_the_caller():
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    objects = {f"uploads/{i:02d}.jpg": good_jpeg(i, size=(64, 48)) for i in range(8)}
    items = [Item(k, k) for k in objects]
    lowered, plain = _PriorityRecordingStore(objects), _PriorityRecordingStore(objects)
    rows = _score(lowered, items, _Predictor(), threads=2, fetch_nice=7)
    assert [r["status"] for r in rows] == ["ok"] * 8
    assert lowered.nice == {min(19, base + 7)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # caller unchanged
    _score(plain, items, _Predictor(), threads=2)  # a different nice makes a new pool
    assert plain.nice == {base}


def test_score_worker_shortens_the_gil_switch_interval_when_it_loads_a_model(env, monkeypatch):
    import torch

    from benchmarks._stack import reset_caches
    from tests.workers.helpers import publish_tiny_champion
    from workers.runtime import store
    from workers.tasks import score

    monkeypatch.setenv("BIRTHMARK_SCORE_GIL_SWITCH_MS", "2")
    monkeypatch.setattr(score, "_loaded", {})
    reset_caches()
    model_id = publish_tiny_champion(store())
    before, threads = sys.getswitchinterval(), torch.get_num_threads()
    try:
        assert score.current_model().model_id == model_id
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)
        torch.set_num_threads(threads)


@pytest.mark.parametrize(("setting", "traced"), [(None, True), ("0", False)])
def test_score_worker_scores_with_torchscript_unless_turned_off(env, monkeypatch, setting, traced):
    from benchmarks._stack import reset_caches
    from tests.workers.helpers import publish_tiny_champion
    from workers.runtime import store
    from workers.tasks import score

    if setting is not None:
        monkeypatch.setenv("BIRTHMARK_SCORE_TORCHSCRIPT", setting)
    monkeypatch.setattr(score, "_loaded", {})
    reset_caches()
    publish_tiny_champion(store())
    before, threads = sys.getswitchinterval(), torch.get_num_threads()
    try:
        predictor = score.current_model().predictor
    finally:
        sys.setswitchinterval(before)
        torch.set_num_threads(threads)
    assert (predictor.traced is not None) is traced
    image = Image.new("RGB", (40, 30), (180, 120, 100))
    eager = models.Predictor(predictor.model, predictor.card, device="cpu")  # the folded net
    np.testing.assert_allclose(predictor.predict([image], [{}]), eager.predict([image], [{}]))


def test_isolated_decoding_gives_the_same_rows_and_error_kinds():
    objects = {f"uploads/{i:02d}.jpg": good_jpeg(i, size=(64 + 8 * i, 48)) for i in range(6)}
    objects["uploads/text.jpg"] = b"a note, not an image"
    objects["uploads/empty.jpg"] = b""
    items = [Item(k, k) for k in objects]
    in_process = _score(_Store(objects), items, _Predictor(), threads=2)
    isolated = _score(_Store(objects), items, _Predictor(), threads=2, isolate_decoding=True)
    assert isolated == in_process
    assert [r.get("error_kind") for r in isolated] == [None] * 6 + ["not_an_image", "empty"]


def test_a_child_decoder_that_runs_too_long_is_killed_and_reported():
    from workers.isolated_decode import DecoderCrashed, decode_in_child

    decoded = decode_in_child(good_jpeg(1, size=(320, 240)), max_pixels=10**8, target=96)
    assert (decoded.image.mode, decoded.format) == ("RGB", "JPEG")
    assert decoded.original_size == (320, 240)
    assert min(decoded.image.size) == 96
    with pytest.raises(DecoderCrashed, match="did not finish in 0.001 s"):
        decode_in_child(good_jpeg(2, size=(2000, 1500)), max_pixels=10**8, timeout_s=0.001)


class _HeldStore(_Store):
    """Holds each get of a key in ``held`` until ``release`` is set; ``entered`` says one began."""

    def __init__(self, objects, held: set[str], release: threading.Event) -> None:
        super().__init__(objects)
        self.held, self.release, self.entered = held, release, threading.Event()

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        if key in self.held:
            self.entered.set()
            self.release.wait(30)
        return super().get(key, max_bytes=max_bytes)


def test_an_image_that_never_arrives_raises_decoder_hung_and_spares_the_other_batch():
    objects = {f"uploads/{i:02d}.jpg": good_jpeg(i, size=(64 + i, 48)) for i in range(12)}
    keys = list(objects)
    stuck, gate = threading.Event(), threading.Event()
    hung_store = _HeldStore(objects, {keys[1]}, stuck)  # never arrives (until cleanup)
    other_store = _HeldStore(objects, {keys[6]}, gate)
    old_pool = scoring._fetch_pool(2)
    outcome: dict = {}

    def run(name, store, items, **kwargs):
        try:
            outcome[name] = _score(store, items, _Predictor(), threads=2, **kwargs)
        except Exception as err:  # noqa: BLE001 - handed to the asserts below
            outcome[name] = err

    first, second = [Item(k, k) for k in keys[:6]], [Item(k, k) for k in keys[6:]]
    hung = threading.Thread(target=run, args=("hung", hung_store, first), kwargs={"hang_s": 1})
    other = threading.Thread(target=run, args=("other", other_store, second))
    try:
        hung.start()
        assert hung_store.entered.wait(10)  # one thread is stuck on image 1
        other.start()
        # The other thread took the other batch's first image (after the hung batch's rest): the
        # other batch's remaining five are queued in the pool when the hung batch gives up.
        assert other_store.entered.wait(10)
        hung.join(10)
        assert isinstance(outcome["hung"], scoring.DecoderHung), outcome
        assert "image 1 of the batch not fetched and decoded after 1 s" in str(outcome["hung"])
        assert scoring._fetch_pool(2) is not old_pool  # later batches get fresh threads
        gate.set()
        other.join(10)
        # Replacing the pool did not cancel the other batch's queued images.
        assert [row["status"] for row in outcome["other"]] == ["ok"] * 6
    finally:
        stuck.set()
        gate.set()
        hung.join(10)
        other.join(10)


def test_fetch_threads_run_their_torch_ops_on_one_thread_whatever_the_count_when_they_start():
    from workers import scoring

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as the inference thread leaves it after a chunk on every core
    try:
        pool = scoring._fetch_pool(3, 0)  # a new pool: threads started now
        counts = {pool.submit(torch.get_num_threads).result(10) for _ in range(6)}
    finally:
        torch.set_num_threads(before)
    assert counts == {1}

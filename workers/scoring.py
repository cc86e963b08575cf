"""Score one batch of store objects: fetch and decode in a thread pool, predict in chunks.

Every item ends as exactly one row, ``ok`` or ``error`` with a kind; only a transient store failure
(:class:`~workers.store.StoreUnavailable`) escapes, so the Celery task retries the whole batch.

The model should never wait: the fetch pool lives as long as the process, the fetch threads also
crop and colour-balance each image for the champion (``Predictor.prepare``), and the process's one
inference thread (:mod:`workers.inference`) takes whatever images are ready when it is free, from
every batch running meanwhile, so it only stacks crops and runs the network, in full chunks. A
worker runs two batches in threads: one's images download while the other's are scored.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

import models
from workers.inference import Inference, default_inference
from workers.isolated_decode import DecoderCrashed, DecoderHung, decode_for_scoring
from workers.store import InvalidKey, ObjectMissing, ObjectTooLarge, Store, validate_key

__all__ = [
    "DecoderHung",
    "Item",
    "ModelUnavailable",
    "ScoringModel",
    "score_batch",
    "load_scoring_model",
]

log = logging.getLogger(__name__)

ERROR_KINDS = (
    "empty", "not_an_image", "unreadable", "decompression_bomb", "too_large", "unsupported",
    "missing", "invalid_key", "forbidden_key", "duplicate_input", "no_model",
    "model_unavailable", "decoder_crashed",
)  # fmt: skip


class ModelUnavailable(RuntimeError):
    """The champion cannot be loaded (checksum mismatch, missing card or weights)."""


@dataclass(frozen=True)
class Item:
    """One input: a store key, what the user called it, and optional clinical metadata."""

    key: str
    source: str
    metadata: Mapping[str, Any] | None = None
    duplicate_of: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Item:
        return cls(d["key"], d.get("source") or d["key"], d.get("metadata"), d.get("duplicate_of"))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ScoringModel:
    model_id: str
    predictor: models.Predictor
    threshold: float


def load_scoring_model(
    store: Store,
    model_id: str,
    *,
    device: str,
    threshold: float,
    compile: bool = False,
    torchscript: bool = False,
) -> ScoringModel:
    from workers import registry

    device = str(models.resolve_device(device))
    try:
        card = registry.read_card(store, model_id)
        net = models.load_checkpoint(registry.read_weights(store, model_id), card, device=device)
    except (models.ChecksumError, ObjectMissing, ValueError) as err:
        # A corrupt or half-published model must not crash batches: its inputs become error rows.
        raise ModelUnavailable(f"model {model_id} cannot be loaded: {err}") from err
    predictor = models.Predictor(
        net, card, device=device, compile=compile, torchscript=torchscript and not compile
    )
    return ScoringModel(model_id, predictor, threshold)


def _error(item: Item, kind: str, message: str) -> dict[str, Any]:
    return {
        "key": item.source,
        "object_key": item.key,
        "status": "error",
        "error_kind": kind,
        "message": message[:300],
    }


@dataclass
class _Fetched:
    item: Item
    image: np.ndarray | None = None  # the model's input crop (Predictor.prepare)
    quality: str | None = None
    size: tuple[int, int] | None = None
    row: dict[str, Any] | None = None  # set when the item already ended as an error


def _fetch_and_decode(
    store: Store,
    item: Item,
    *,
    allowed_prefixes: Sequence[str],
    max_bytes: int,
    max_pixels: int,
    isolate: bool = False,
    child_timeout_s: float | None = None,
    prepare: Callable[[Image.Image], np.ndarray] | None = None,
) -> _Fetched:
    if item.duplicate_of is not None:
        return _Fetched(
            item, row=_error(item, "duplicate_input", f"same key as {item.duplicate_of}")
        )
    try:
        validate_key(item.key)
    except InvalidKey as err:
        return _Fetched(item, row=_error(item, "invalid_key", str(err)))
    if allowed_prefixes and not any(item.key.startswith(p) for p in allowed_prefixes):
        return _Fetched(
            item,
            row=_error(
                item, "forbidden_key", f"outside the readable prefixes {list(allowed_prefixes)}"
            ),
        )
    try:
        data = store.get(item.key, max_bytes=max_bytes)
    except ObjectMissing:
        return _Fetched(
            item, row=_error(item, "missing", "object not found (deleted or never uploaded)")
        )
    except ObjectTooLarge as err:
        return _Fetched(item, row=_error(item, "too_large", str(err)))
    try:
        image, quality, size = decode_for_scoring(
            data, max_pixels=max_pixels, isolate=isolate, timeout_s=child_timeout_s
        )
    except models.ImageError as err:
        return _Fetched(item, row=_error(item, err.kind, str(err)))
    except DecoderCrashed as err:
        log.error("%s: %s", item.key, err)
        return _Fetched(item, row=_error(item, "decoder_crashed", str(err)))
    except MemoryError:
        raise  # this worker's state, not the file's: the batch is retried
    except Exception as err:  # one file's decoder bug must not fail its job
        # A crafted file can raise what no decoder documents (the AVIF plugin's RuntimeError
        # did): it gets its own row and the traceback goes to the log, for the team to classify.
        log.exception("%s: unexpected decoder error", item.key)
        return _Fetched(
            item, row=_error(item, "unreadable", f"decoder failed: {type(err).__name__}: {err}")
        )
    # Without a model (prepare None) the rows become model errors; the decode still tells a
    # broken upload apart.
    return _Fetched(item, prepare(image) if prepare else None, quality, size)


_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int, int] | None = None  # (pid, threads, nice) the pool was made for
_pool_lock = threading.Lock()


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux; elsewhere a no-op).

    On Linux each thread has its own nice value, so the fetch threads can yield the cores to
    the inference thread whenever both are runnable. A refusal is logged and ignored.
    """
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except OSError as err:
        log.warning("fetch thread keeps its priority: %s", err)


def _start_fetch_thread(nice: int) -> None:
    """A fetch thread runs ``nice`` steps nicer, and its torch ops (the final resize) on itself:
    the inference thread changes torch's thread count per chunk, and a thread started meanwhile
    would otherwise take that count for its own."""
    lower_thread_priority(nice)
    torch.set_num_threads(1)


def _fetch_pool(threads: int, nice: int = 0) -> ThreadPoolExecutor:
    """The process's fetch/decode pool, made on first use (after any fork: threads do not fork)."""
    global _pool, _pool_key
    key = (os.getpid(), threads, nice)
    with _pool_lock:
        if _pool_key != key:
            if _pool is not None and _pool_key is not None and _pool_key[0] == key[0]:
                _pool.shutdown(wait=False)  # resized: idle threads exit, running ones finish
            _pool = ThreadPoolExecutor(
                max_workers=threads,
                thread_name_prefix="fetch",
                initializer=_start_fetch_thread,
                initargs=(nice,),
            )
            _pool_key = key
        return _pool


def _discard_fetch_pool(pool: ThreadPoolExecutor) -> None:
    """Make a new pool on next use; idle threads of ``pool`` exit, a stuck one stays."""
    global _pool, _pool_key
    with _pool_lock:
        if _pool is pool:
            _pool, _pool_key = None, None
    # Not cancel_futures: the other batch task of this worker may have images queued in it.
    pool.shutdown(wait=False)
    log.critical("a fetch/decode thread is stuck; restart this worker to reclaim it")


def score_batch(
    store: Store,
    items: Sequence[Item],
    *,
    model: Callable[[], ScoringModel | None],
    allowed_prefixes: Sequence[str] = (),
    max_bytes: int,
    max_pixels: int,
    threads: int = 4,
    fetch_nice: int = 0,
    inference: Inference | None = None,
    isolate_decoding: bool = False,
    hang_s: float | None = None,
) -> list[dict[str, Any]]:
    """Rows for ``items`` in input order; downloads/decodes overlap with inference.

    Decoded images go to ``inference`` (the process's inference thread by default), which scores
    them in chunks with those of other batches running meanwhile. The ``threads`` fetch
    threads run ``fetch_nice`` steps nicer than the caller (see :func:`lower_thread_priority`).
    ``isolate_decoding`` decodes each image in a child process
    (:func:`~workers.isolated_decode.decode_in_child`): slower, but a crashing decoder costs one
    error row, not the worker. ``hang_s`` bounds the wait for each image: past it, in process,
    :class:`DecoderHung` is raised (the stuck thread is left behind and the pool replaced); in a
    child, the child is killed and the image gets a ``decoder_crashed`` row.
    """
    # The champion first (cached; one pointer read): the fetch threads prepare images for it.
    unavailable = None
    try:
        scoring = model()
    except ModelUnavailable as err:
        log.error("%s", err)
        scoring, unavailable = None, str(err)
    pool = _fetch_pool(threads, fetch_nice)
    futures: list[Future[_Fetched]] = [
        pool.submit(
            _fetch_and_decode,
            store,
            it,
            allowed_prefixes=allowed_prefixes,
            max_bytes=max_bytes,
            max_pixels=max_pixels,
            isolate=isolate_decoding,
            child_timeout_s=hang_s,
            prepare=scoring.predictor.prepare if scoring else None,
        )  # fmt: skip
        for it in items
    ]
    wait_s = None if isolate_decoding else hang_s  # a child's own timeout bounds the wait there
    try:
        return _score_fetched(
            futures,
            scoring,
            unavailable,
            inference=inference or default_inference(),
            wait_s=wait_s,
        )
    except DecoderHung:
        _discard_fetch_pool(pool)  # later batches get threads that are not stuck
        raise
    finally:
        for fut in futures:  # on a retried failure, do not fetch for a batch that is gone
            fut.cancel()


def _score_fetched(
    futures: Sequence[Future[_Fetched]],
    scoring: ScoringModel | None,
    unavailable: str | None,
    *,
    inference: Inference,
    wait_s: float | None = None,
) -> list[dict[str, Any]]:
    n = len(futures)
    rows: list[dict[str, Any] | None] = [None] * n
    scored: list[tuple[int, _Fetched, Future[float]]] = []
    announced = n if scoring is not None else 0
    inference.expect(announced)
    handed = 0
    try:
        for i, fut in enumerate(futures):
            try:
                # StoreUnavailable propagates: the task retries the batch.
                fetched = fut.result(timeout=wait_s)
            except FutureTimeout:
                raise DecoderHung(
                    f"image {i} of the batch not fetched and decoded after {wait_s:g} s"
                ) from None
            if fetched.row is not None:
                rows[i] = fetched.row
                if announced:
                    inference.skip()
            elif unavailable is not None:
                rows[i] = _error(fetched.item, "model_unavailable", unavailable)
            elif scoring is None:
                rows[i] = _error(
                    fetched.item, "no_model", "no champion model; run `birthmark train`"
                )
            else:
                metadata = fetched.item.metadata or {}
                scored.append(
                    (i, fetched, inference.submit(scoring.predictor, fetched.image, metadata))
                )
            handed += 1
    finally:
        if announced:
            inference.skip(announced - handed)  # a failed batch: the thread must not wait for them
    for i, f, probability in scored:
        p = probability.result()
        row = {
            "key": f.item.source,
            "object_key": f.item.key,
            "status": "ok",
            "probability": round(p, 6),
            "label": "malignant" if p >= scoring.threshold else "benign",
            "quality": f.quality,
            "width": f.size[0],
            "height": f.size[1],
            "model_id": scoring.model_id,
        }
        # Bad metadata never fails a row: it is scored as missing and the row says why.
        problems = models.metadata_problems(f.item.metadata)
        if problems:
            row["warnings"] = problems
        rows[i] = row
    return rows

"""Decode one image in a child process: a decoder that crashes kills the child, not the worker.

Pillow, libjpeg-turbo, libwebp and libheif are C code; a crafted file that makes one of them crash
would take the whole worker with it, and the task, redelivered, would take the next worker too.
Work whose earlier run died (:func:`workers.runs.counted_run`) therefore decodes each image in a
child of its own: the file that crashes its child becomes a ``decoder_crashed`` error row in a
scoring job, an unreadable (rejected) image in a curated version.

Children fork from a forkserver that has imported what they run (a fork, not a torch import, per
image); where there is no forkserver they are spawned.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from typing import Any

from PIL import Image

import models

__all__ = ["DecoderCrashed", "DecoderHung", "decode_for_scoring", "decode_in_child"]

DEFAULT_TIMEOUT_S = 60.0

_context: Any = None
_context_lock = threading.Lock()
# A forkserver child's exit status is read from a pipe once; a Process.start() in one thread polls
# every live child (multiprocessing's _cleanup), so a join() in another thread could read it at the
# same time, get EOF, and report exit code 255 for a child killed by a signal. One at a time.
_children_lock = threading.Lock()


class DecoderCrashed(RuntimeError):
    """The child decoding an image died (a signal, an abort) or did not answer in time."""


class DecoderHung(RuntimeError):
    """An image was not fetched and decoded in time; its thread cannot be stopped, only left."""


def _mp_context():
    global _context
    with _context_lock:
        if _context is None:
            method = (
                "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            )
            _context = multiprocessing.get_context(method)
            if method == "forkserver":
                # What a child runs, not ``models``, which loads its submodules on first use;
                # decode_image's resize imports torchvision's v2 kernels (~1.7 s) on first use too.
                _context.set_forkserver_preload(
                    ["models.imageio", "models.predictor", "torchvision.transforms.v2.functional"]
                )
        return _context


def decode_for_scoring(
    data: bytes, *, max_pixels: int, isolate: bool = False, timeout_s: float | None = None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """``(image, quality, original size)``: what scoring needs of an upload.

    Decoded in this process, or with ``isolate`` in a child (:func:`decode_in_child`).
    """
    if isolate:
        decoded = decode_in_child(data, max_pixels=max_pixels, timeout_s=timeout_s)
    else:
        decoded = models.decode_image(data, max_pixels=max_pixels)
    return decoded.image, models.assess_quality(decoded), decoded.original_size


def _decode(conn, data: bytes, max_pixels: int, target: int | None) -> None:
    """The child: :func:`models.decode_image`, and the outcome sent back."""
    models.set_threads(1)
    try:
        conn.send(("ok", models.decode_image(data, max_pixels=max_pixels, target=target)))
    except models.ImageError as err:
        conn.send(("error", err.kind, str(err)))
    finally:
        conn.close()


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _join(child) -> None:
    """Wait for ``child`` to exit: a moment, as it answered or died already."""
    with _children_lock:
        child.join()


def decode_in_child(
    data: bytes,
    *,
    max_pixels: int,
    target: int | None = 224,
    timeout_s: float | None = None,
) -> models.DecodedImage:
    """:func:`models.decode_image` in a fresh child process.

    Raises :class:`models.ImageError` as :func:`models.decode_image` does, and
    :class:`DecoderCrashed` when the child dies or takes longer than ``timeout_s``
    (``DEFAULT_TIMEOUT_S`` when None).
    """
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    ctx = _mp_context()
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_decode, args=(sender, data, max_pixels, target), name="decode")
    with _children_lock:
        child.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            child.kill()
            _join(child)
            raise DecoderCrashed(f"the decoder did not finish in {timeout_s:g} s")
        try:
            outcome = receiver.recv()
        except EOFError:  # the child died before it answered
            _join(child)
            raise DecoderCrashed(f"the decoder crashed ({_describe(child.exitcode)})") from None
    finally:
        receiver.close()
    _join(child)
    if outcome[0] == "error":
        raise models.ImageError(outcome[1], outcome[2])
    return outcome[1]

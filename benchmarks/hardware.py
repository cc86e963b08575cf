"""How close the predictor runs to the machine: model FLOP/s next to fp32 GEMM FLOP/s."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import models
from benchmarks._timing import median_rate
from models.predictor import forward_views

__all__ = [
    "compile_payback",
    "gemm_flops",
    "gemm_rates",
    "model_flops",
    "predictor_rate",
    "torchscript_rates",
]


def gemm_rates(*, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best fp32 FLOP/s of an ``n`` x ``n`` x ``n`` matrix product through each of torch's two CPU
    GEMM back ends (all intra-op threads).

    ``torch.mm`` runs on MKL (or OpenBLAS); a 1x1 convolution in channels_last is the same product
    run by oneDNN, whose kernels the model's convolutions use. They can differ twofold: MKL takes
    its AVX2 path on AMD CPUs that have AVX-512, oneDNN does not.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    # (1, n, h, w) with h * w = n pixels against n 1x1 filters: 2 n^3 FLOPs, as a @ b.
    x = torch.randn(1, n, 32, n // 32).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    kernels = {"torch.mm": lambda: torch.mm(a, b), "oneDNN": lambda: F.conv2d(x, w)}
    rates = {}
    with torch.inference_mode():
        for name, kernel in kernels.items():
            kernel()
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                kernel()
                best = min(best, time.perf_counter() - start)
            rates[name] = 2 * n**3 / best
    return rates


def gemm_flops(*, n: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 GEMM FLOP/s: the faster back end of :func:`gemm_rates`."""
    return max(gemm_rates(n=n, repeats=repeats).values())


def model_flops(model: torch.nn.Module, *, size: int = 224, flips: bool = False) -> int:
    """FLOPs to score one ``size`` x ``size`` image (four passes with ``flips``), as counted by
    FlopCounterMode around the Predictor's own forward (``models.predictor.forward_views``)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        forward_views(model.eval(), torch.randn(1, 3, size, size), None, flips=flips)
    return counter.get_total_flops()


def predictor_rate(predictor: models.Predictor, images, *, repeats: int = 3) -> float:
    """Median img/s of ``Predictor.predict`` on already-decoded images (preprocessing included)."""
    return median_rate(lambda: predictor.predict(images), len(images), repeats=repeats)


def compile_payback(card: dict, weights: bytes, images, *, repeats: int = 3) -> dict[str, float]:
    """Compile seconds, eager and compiled img/s, and images after which compiling pays back."""
    eager = models.Predictor(models.load_checkpoint(weights, card), card, device="cpu")
    start = time.perf_counter()
    compiled = models.Predictor(
        models.load_checkpoint(weights, card), card, device="cpu", compile=True
    )
    compiled.predict(images[: compiled.batch_size])  # compilation happens on the first call
    compile_s = time.perf_counter() - start
    eager_rate = predictor_rate(eager, images, repeats=repeats)
    compiled_rate = predictor_rate(compiled, images, repeats=repeats)
    saved_per_image = 1 / eager_rate - 1 / compiled_rate
    payback = compile_s / saved_per_image if saved_per_image > 0 else float("inf")
    return {
        "compile_s": compile_s,
        "eager": eager_rate,
        "compiled": compiled_rate,
        "payback_images": payback,
    }


@contextmanager
def _python_busy():
    """A thread running pure Python meanwhile: it wants the GIL all the time, as boto3 in the
    fetch threads or the Celery consumer do part of the time."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def torchscript_rates(
    card: dict, weights: bytes, images, *, threads: int, switch_ms: float, repeats: int = 3
) -> dict[str, float]:
    """Eager and TorchScript ``predict`` img/s (with metadata, as scoring calls it), alone and
    beside a thread running Python, at the score worker's torch threads and GIL switch interval.

    ``prepared``: TorchScript on crops made beforehand by ``Predictor.prepare``, as the score
    worker's fetch threads hand them over (crop and colour constancy off the inference thread).
    """
    eager = models.Predictor(models.load_checkpoint(weights, card), card, device="cpu")
    traced = models.Predictor(
        models.load_checkpoint(weights, card), card, device="cpu", torchscript=True
    )
    if traced.traced is None:
        raise RuntimeError("the champion could not be traced; see the log")
    meta = [{}] * len(images)
    crops = [traced.prepare(im) for im in images]
    saved = sys.getswitchinterval(), torch.get_num_threads()
    torch.set_num_threads(threads)
    sys.setswitchinterval(switch_ms / 1000)
    rates: dict[str, float] = {}
    try:
        for busy in (False, True):
            for name, p, inputs in (
                ("eager", eager, images),
                ("torchscript", traced, images),
                ("prepared", traced, crops),
            ):
                with _python_busy() if busy else nullcontext():
                    run = lambda p=p, inputs=inputs: p.predict(inputs, meta)  # noqa: E731
                    rate = median_rate(run, len(images), repeats=repeats)
                rates[name + ("_busy" if busy else "")] = rate
    finally:
        sys.setswitchinterval(saved[0])
        torch.set_num_threads(saved[1])
    return rates

"""How close the predictor runs to the machine: model FLOP/s next to fp32 GEMM FLOP/s."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import models
from benchmarks._timing import median_rate
from models.predictor import forward_views

__all__ = ["compile_payback", "gemm_flops", "model_flops", "predictor_rate"]


def gemm_flops(*, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of ``torch.mm`` on two ``n`` x ``n`` matrices (all intra-op threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


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

"""Robust timing on a shared machine: warm up, repeat, take the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["median_rate", "percentile", "side_by_side"]


def median_rate(
    fn: Callable[[], object], items: int, *, repeats: int = 3, warmup: int = 1
) -> float:
    """Median items/s of ``fn()`` (which processes ``items`` items) over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return items / statistics.median(seconds)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def side_by_side(
    a: Callable[[], object],
    b: Callable[[], object],
    items: int,
    *,
    repeats: int = 3,
    rounds: list[float] | None = None,
) -> tuple[float, float, float]:
    """Interleaved runs of ``a`` and ``b`` (after one warm-up each), so both see the same load.

    Returns the median items/s of each and the median of the per-round ratios ``b / a``; the
    per-round ratios themselves are appended to ``rounds`` when given.
    """
    a()
    b()
    rates_a, rates_b, ratios = [], [], []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        a()
        rate_a = items / (time.perf_counter() - start)
        start = time.perf_counter()
        b()
        rate_b = items / (time.perf_counter() - start)
        rates_a.append(rate_a)
        rates_b.append(rate_b)
        ratios.append(rate_b / rate_a)
    if rounds is not None:
        rounds.extend(ratios)
    return statistics.median(rates_a), statistics.median(rates_b), statistics.median(ratios)

"""Interleaved repeats with medians, shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_medians(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per case: one warm-up call each, then ``repeats`` rounds over all cases in turn."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}

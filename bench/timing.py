"""Timing shared by the benchmarks."""

from __future__ import annotations

import gc
import statistics
import time


def interleaved_medians(fns, runs: int) -> list[float]:
    """Median seconds of each function, timed in turn run after run (so a busy neighbour on the
    machine slows both sides of the ratio alike), after one warm-up call each."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    gc.collect()
    for _ in range(runs):
        for fn, times in zip(fns, samples):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return [statistics.median(times) for times in samples]

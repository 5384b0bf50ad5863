"""Timing loops shared by the CPU and storage benchmarks: bounded by a count and a
deadline, reported as percentiles in microseconds with the process's CPU time per run."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

__all__ = ["cpu_seconds", "measure_async", "measure_sync", "show", "summary"]


def summary(samples: list[float], cpu_seconds: float) -> dict[str, float]:
    """Percentiles of ``samples`` (µs) and the process's CPU time (all threads) per run."""
    n = len(samples)
    worst = max(range(n), key=samples.__getitem__)
    samples.sort()
    return {
        "runs": n,
        "p50_us": samples[n // 2],
        "p99_us": samples[min(n - 1, int(n * 0.99))],
        "max_us": samples[-1],
        "max_at_run": worst,
        "cpu_us_per_run": cpu_seconds / n * 1e6,
    }


def cpu_seconds() -> float:
    """CPU time of the whole process, user and system, all threads."""
    return time.process_time()


def show(name: str, result: dict[str, float]) -> None:
    print(
        f"  {name:<40} p50 {result['p50_us']:>8.0f} us  p99 {result['p99_us']:>8.0f}"
        f"  max {result['max_us']:>8.0f} (#{result['max_at_run']:.0f})"
        f"  cpu {result['cpu_us_per_run']:>6.0f}"
        f"  n={result['runs']:.0f}",
        flush=True,
    )


def _timed(samples: list[float], count: int, deadline: float) -> Iterator[None]:
    """Yields once per run, at most ``count`` times or until ``deadline`` seconds have
    passed, and appends each run's wall time in microseconds to ``samples``."""
    stop_at = time.monotonic() + deadline
    for _ in range(count):
        began = time.perf_counter()
        yield
        samples.append((time.perf_counter() - began) * 1e6)
        if time.monotonic() > stop_at:
            break


async def measure_async(
    name: str, operation: Callable[[], Awaitable[object]], count: int, deadline: float
) -> dict[str, float]:
    """p50, p99 and max of ``operation`` in microseconds, over at most ``count`` runs."""
    samples: list[float] = []
    cpu_before = cpu_seconds()
    for _ in _timed(samples, count, deadline):
        await operation()
    return _report(name, samples, cpu_before)


def measure_sync(
    name: str, operation: Callable[[], object], count: int, deadline: float
) -> dict[str, float]:
    """As :func:`measure_async`, for a plain function."""
    samples: list[float] = []
    cpu_before = cpu_seconds()
    for _ in _timed(samples, count, deadline):
        operation()
    return _report(name, samples, cpu_before)


def _report(name: str, samples: list[float], cpu_before: float) -> dict[str, float]:
    result = summary(samples, cpu_seconds() - cpu_before)
    show(name, result)
    return result

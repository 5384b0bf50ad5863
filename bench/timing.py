"""Timing loops shared by the CPU and storage benchmarks: bounded by a count and a
deadline, reported as percentiles in microseconds with the process's CPU time per run."""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

__all__ = [
    "cpu_seconds",
    "frozen_heap",
    "measure_async",
    "measure_rounds",
    "measure_sync",
    "show",
    "summary",
]


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


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep what this process holds now out of the garbage collector's full passes for
    the block: the sealed messages a measurement sends. With 20,000 of them held, a full
    pass stopped the bench's process for 60 to 75 ms, and the receipt responder, the OTP
    submitter and the event follower with it: a pause the bench then timed as the
    gateway's."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


def measure_rounds(
    operations: Mapping[str, Callable[[], object]],
    count: int,
    rounds: int,
    deadline: float,
    warmup: int = 20,
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Each of ``operations`` run ``count`` times in all, in ``rounds`` (at most ``count``)
    interleaved rounds: one round of each in turn, so that all see the same CPU speed and
    load; after ``warmup`` uncounted runs each, so that first-run costs (lazy imports,
    caches) stay out. Stops after the round that passes ``deadline`` seconds.

    Returns the :func:`summary` of each operation, with ``cpu_us_per_run`` the median of
    its rounds' CPU time per run and ``cpu_us_min`` / ``cpu_us_max`` the fastest and
    slowest round; and the CPU time per run of every round, by operation.
    """
    for operation in operations.values():
        for _ in range(warmup):
            operation()
    # The first count % rounds rounds run one more, so that the runs add up to count.
    sizes = [count // rounds + (index < count % rounds) for index in range(rounds)]
    samples: dict[str, list[float]] = {name: [] for name in operations}
    cpu_rounds: dict[str, list[float]] = {name: [] for name in operations}
    stop_at = time.monotonic() + deadline
    for per_round in sizes:
        for name, operation in operations.items():
            walls = samples[name]
            cpu_before = cpu_seconds()
            for _ in range(per_round):
                began = time.perf_counter()
                operation()
                walls.append((time.perf_counter() - began) * 1e6)
            cpu_rounds[name].append((cpu_seconds() - cpu_before) / per_round * 1e6)
        if time.monotonic() > stop_at:
            break
    results: dict[str, dict[str, float]] = {}
    for name, cpu in cpu_rounds.items():
        runs = sizes[: len(cpu)]
        result = summary(samples[name], sum(c * n for c, n in zip(cpu, runs, strict=True)) / 1e6)
        result.update(
            cpu_us_per_run=statistics.median(cpu),
            cpu_us_min=min(cpu),
            cpu_us_max=max(cpu),
            rounds=len(cpu),
        )
        show(name, result)
        results[name] = result
    return results, cpu_rounds

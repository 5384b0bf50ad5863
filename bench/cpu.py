"""Where a measurement's CPU goes: the whole machine's, the IM server's, the bench's own
and the gateway's, per message, over the same interval.

On two shared cores, a throughput is set by the CPU that every process in the path
spends per message, not by the gateway's alone: c against b compares two such sums.
The split shows which part of each a change can move.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "CpuSplit",
    "gateway_part_seconds",
    "machine_busy_seconds",
    "process_cpu_seconds",
    "tree_cpu_seconds",
]

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent on anything but idling or waiting for I/O since
    boot (the first line of ``/proc/stat``; steal, taken by other guests, excluded)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice: guest time
    # is already counted in user and nice.
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) * _TICK_S


def _stat_fields(pid: int, thread: int | None = None) -> list[str]:
    # The fields after the command (which may hold spaces and parentheses), from the
    # state on: ppid is the 4th of the whole line, utime the 14th.
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    return Path(path).read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """The process's user + system CPU time so far (with that of its children which
    have exited and been waited for, if ``reaped_children``), from ``/proc/<pid>/stat``.

    Raises: OSError: The process is gone.
    """
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks * _TICK_S


def tree_cpu_seconds(parent: int) -> float:
    """The CPU time of ``parent`` and its children, living or exited (a gateway and its
    admission workers; a postmaster, its backends and its autovacuum workers).

    Raises: OSError: ``parent`` is gone.
    """
    total = process_cpu_seconds(parent, reaped_children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        # A process may end while this loop reads: its time moves to the parent's.
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(_stat_fields(int(stat.parent.name))[1]) == parent:
                total += process_cpu_seconds(int(stat.parent.name))
    return total


def gateway_part_seconds(pid: int) -> dict[str, float]:
    """A gateway process's CPU time so far, by part: its event loop (the main thread),
    its other threads (the SQLite writer, executors) and its children (the admission
    workers, living or exited).

    Raises: OSError: The process is gone.
    """
    fields = _stat_fields(pid, thread=pid)
    loop = (int(fields[11]) + int(fields[12])) * _TICK_S
    process = process_cpu_seconds(pid)
    return {
        "event_loop": loop,
        "other_threads": process - loop,
        "admission_workers": tree_cpu_seconds(pid) - process,
    }


class CpuSplit:
    """CPU seconds spent from its making to :meth:`per_message`: by the machine, by the
    IM server's processes, by this bench process (all its threads) and by the other
    parts named (each a set of processes, counted with their children).

    Args:
        server_pids: The IM server's processes, read when the split is made and ended.
        parts: Other processes in the path by name: ``gateway``, ``database``.
    """

    def __init__(
        self,
        server_pids: Callable[[], Sequence[int]],
        parts: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        self._server_pids = server_pids
        self._parts = dict(parts or {})
        self._before = self._read()

    def _read(self) -> dict[str, float]:
        figures = {
            "machine": machine_busy_seconds(),
            "im_server": sum(tree_cpu_seconds(pid) for pid in self._server_pids()),
            "bench": time.process_time(),
        }
        for name, pids in self._parts.items():
            figures[name] = sum(tree_cpu_seconds(pid) for pid in pids)
        return figures

    def per_message(self, messages: int) -> dict[str, float]:
        """Microseconds per message of each, and ``other``: what the machine spent
        besides them (the kernel's interrupts, other processes).

        Raises: OSError: A process measured is gone.
        """
        now = self._read()
        spent = {name: max(0.0, now[name] - self._before[name]) for name in now}
        parts = sum(seconds for name, seconds in spent.items() if name != "machine")
        spent["other"] = max(0.0, spent["machine"] - parts)
        return {name: round(seconds / max(messages, 1) * 1e6, 1) for name, seconds in spent.items()}

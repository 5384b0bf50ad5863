"""The benchmark's own parts that need no server: which measurements ``--items`` picks,
the CPU clocks read from /proc, and the table."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.__main__ import chosen_items, parse_args
from bench.gateway import cpu_seconds, tree_cpu_seconds
from bench.report import Row, table

# The child burns this much CPU before it exits; the clocks tick every 10 ms.
CHILD_CPU_S = 0.3
BURN = (
    "import time\n"
    "began = time.process_time()\n"
    f"while time.process_time() - began < {CHILD_CPU_S}:\n"
    "    pass\n"
)


def test_the_letter_c_selects_every_storage_variant() -> None:
    items = parse_args(["--items", "c"]).items
    assert [item for item, _, _ in chosen_items("ejabberd", items)] == ["c", "c-pg1", "c-pg2"]
    # Prosody takes one component connection per domain: no second active instance.
    assert [item for item, _, _ in chosen_items("prosody", items)] == ["c", "c-pg1"]
    assert [item for item, _, _ in chosen_items("ejabberd", "ad")] == ["a", "d"]


def test_cpu_seconds_follow_the_process_clock() -> None:
    before, clock = cpu_seconds(os.getpid()), time.process_time()
    while time.process_time() - clock < 0.2:
        pass
    spent = cpu_seconds(os.getpid()) - before
    assert 0.15 <= spent < 1.0


def test_tree_cpu_seconds_keep_a_child_that_has_exited() -> None:
    me = os.getpid()
    own, tree = cpu_seconds(me), tree_cpu_seconds(me)
    subprocess.run([sys.executable, "-c", BURN], check=True, timeout=30)
    assert tree_cpu_seconds(me) - tree >= CHILD_CPU_S - 0.05
    # The parent itself only waited.
    assert cpu_seconds(me) - own < CHILD_CPU_S / 2


def test_the_table_shows_the_cpu_cost_per_message_in_microseconds() -> None:
    row = Row(
        server="ejabberd",
        item="c-pg2",
        description="gateway on PostgreSQL, 2 instances",
        count=2000,
        done=2000,
        rate=316.0,
        p50_ms=1.0,
        p99_ms=2.0,
        seconds=6.3,
        complete=True,
        latency="answer",
        note="CPU us/msg 1005 + 1030",
        cpu_s_per_message=0.002035,
    )
    header, _, line, *_ = table([row]).splitlines()
    assert "CPU us/msg" in header
    assert "2,035.0" in line
    assert line.rstrip().endswith("ok CPU us/msg 1005 + 1030")

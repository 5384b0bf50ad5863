"""The benchmark's own parts that need no server: which measurements ``--items`` picks,
the CPU clocks read from /proc, and the table."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import cast

import pytest
from bench import pieces
from bench.__main__ import chosen_items, parse_args, repeated_items
from bench.cpu import CpuSplit, gateway_part_seconds, process_cpu_seconds, tree_cpu_seconds
from bench.gateway import BenchGateway, _stage_percentiles, envelope_chars
from bench.local_items import gateway_pieces
from bench.measure import RECIPIENT
from bench.raw_client import ReceiptResponder
from bench.report import (
    PIECES_SUM,
    Row,
    budget_lines,
    cpu_lines,
    gateway_budgets,
    ratios,
    round_ratios,
    table,
    targets,
)
from bench.timing import frozen_heap
from bench.xmlstream import XmlStream

from cmaas.clientservice import AppCredentials
from cmaas.clock import now_ms
from cmaas.devservers import XmppServer
from cmaas.envelope import DeviceKeyring, generate_private_key
from cmaas.lifecycle import Priority

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
    assert [item for item, _, _ in chosen_items("ejabberd", "ad")] == ["a", "a-env", "d", "d-flood"]
    assert [item for item, _, _ in chosen_items("ejabberd", "b")] == ["b", "b-env"]


def test_the_peers_bodies_are_as_long_as_the_envelopes_c_sends() -> None:
    server = cast(
        XmppServer, SimpleNamespace(domain="localhost", component_domain="cmaas.localhost")
    )
    keyring = DeviceKeyring.generate(f"{RECIPIENT}@localhost", now_ms=now_ms(), one_time_prekeys=0)
    gateway = BenchGateway(
        [],
        "bench@cmaas.localhost",
        generate_private_key(),
        keyring.bundle(),
        AppCredentials("bench", "secret", b"k" * 32),
    )
    sent = [len(s.envelope or "") for s in gateway.seal(20, Priority.NORMAL, "c")]
    # A DER signature's length varies: 70 to 72 bytes mostly, down to 68 when r or s
    # is short (one in 128 signatures); base64url rounds, and the ids differ by a digit.
    assert all(abs(envelope_chars(server, 20) - length) <= 10 for length in sent)
    assert min(sent) > 900


def test_c_is_compared_with_the_peers_at_both_body_sizes() -> None:
    def row(item: str, rate: float) -> Row:
        return Row(
            server="ejabberd",
            item=item,
            description="",
            count=10,
            done=10,
            rate=rate,
            p50_ms=None,
            p99_ms=None,
            seconds=1.0,
            complete=True,
            latency="",
        )

    found = ratios(
        [row("a", 8000), row("a-env", 6000), row("b", 3000), row("b-env", 2500), row("c", 3000)]
    )
    assert found["ejabberd c/b"] == 1.0
    assert found["ejabberd c/b-env"] == 1.2
    assert found["ejabberd c/a-env"] == 0.5


def test_later_rounds_repeat_a_b_and_c_only_where_there_is_a_pair() -> None:
    again = repeated_items("ejabberd", "abcdf", 3)
    assert [[entry[0] for entry in rounds] for rounds in again] == [["a", "b", "c"]] * 2
    assert [entry[0] for entry in repeated_items("prosody", "acd", 2)[0]] == ["a", "c"]
    assert repeated_items("ejabberd", "cd", 3) == []
    assert repeated_items("ejabberd", "abc", 1) == []
    assert parse_args(["--rounds", "1"]).rounds == 1
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "0"])


def _rated(item: str, rate: float, number: int, cpu: dict[str, float] | None = None) -> Row:
    extra: dict[str, object] = {"round": number}
    if cpu is not None:
        extra["cpu_us_per_message"] = cpu
    return Row("ejabberd", item, "", 10, 10, rate, None, None, 1.0, True, "", extra=extra)


def test_a_ratio_of_several_rounds_is_the_median_of_each_rounds_pair() -> None:
    rows = [
        _rated("b", 3000, 1),
        _rated("c", 2400, 1),
        _rated("b", 2000, 2),
        _rated("c", 2200, 2),
        _rated("b", 3000, 3),
        _rated("c", 3000, 3),
    ]
    # Paired by round: 0.8, 1.1 and 1.0; pooled rates would give 7,600 / 8,000.
    assert round_ratios(rows)["ejabberd c/b"] == [0.8, 1.1, 1.0]
    assert ratios(rows)["ejabberd c/b"] == 1.0
    assert "ratio ejabberd c/b = 1.000 (median of 3 rounds: 0.800, 1.100, 1.000)" in table(rows)
    # A round whose c did not finish has no ratio.
    rows[5] = Row.failed("ejabberd", "c", "", 10, "down")
    rows[5].extra["round"] = 3
    assert round_ratios(rows)["ejabberd c/b"] == [0.8, 1.1]
    assert ratios(rows)["ejabberd c/b"] == 0.8


def test_the_budget_takes_the_median_round() -> None:
    def b(machine: float, number: int) -> Row:
        return _rated("b", 1, number, {"machine": machine, "im_server": 0.0, "bench": 0.0})

    def c(gateway: float, number: int) -> Row:
        split = {"machine": gateway + 150, "im_server": 100.0, "bench": 50.0, "gateway": gateway}
        return _rated("c", 1, number, split)

    rows = [b(400, 1), c(300, 1), b(500, 2), c(320, 2), b(450, 3), c(280, 3)]
    assert gateway_budgets(rows) == {
        "ejabberd": {"gateway_may_spend": 300.0, "gateway_spends": 300.0, "rounds": 3}
    }
    assert "budget ejabberd c/b = 1.0 (median of 3 rounds): the gateway may spend 300" in table(
        rows
    )
    assert table(rows).count("cpu ejabberd c round ") == 3


def test_cpu_seconds_follow_the_process_clock() -> None:
    before, clock = process_cpu_seconds(os.getpid()), time.process_time()
    while time.process_time() - clock < 0.2:
        pass
    spent = process_cpu_seconds(os.getpid()) - before
    assert 0.15 <= spent < 1.0


def test_tree_cpu_seconds_keep_a_child_that_has_exited() -> None:
    me = os.getpid()
    own, tree = process_cpu_seconds(me), tree_cpu_seconds(me)
    subprocess.run([sys.executable, "-c", BURN], check=True, timeout=30)
    assert tree_cpu_seconds(me) - tree >= CHILD_CPU_S - 0.05
    # The parent itself only waited.
    assert process_cpu_seconds(me) - own < CHILD_CPU_S / 2


def test_a_gateways_cpu_divides_among_its_loop_its_threads_and_its_children() -> None:
    me = os.getpid()
    before = gateway_part_seconds(me)

    def burn() -> None:
        clock = time.thread_time()
        while time.thread_time() - clock < CHILD_CPU_S:
            pass

    worker = threading.Thread(target=burn)
    worker.start()
    worker.join()
    subprocess.run([sys.executable, "-c", BURN], check=True, timeout=30)
    after = gateway_part_seconds(me)
    spent = {name: after[name] - before[name] for name in after}
    # The main thread only waited; the thread and the child each burnt their share.
    assert spent["event_loop"] < CHILD_CPU_S / 2
    assert spent["other_threads"] >= CHILD_CPU_S - 0.05
    assert spent["admission_workers"] >= CHILD_CPU_S - 0.05


def test_the_cpu_split_divides_the_machines_time_among_the_processes_named() -> None:
    # The child burns its share, says so, and stays alive to be read.
    with subprocess.Popen(
        [sys.executable, "-c", BURN + "print('burnt', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            split = CpuSplit(lambda: [], {"gateway": [child.pid]})
            clock = time.process_time()
            while time.process_time() - clock < 0.2:
                pass
            assert child.stdout is not None and child.stdout.readline() == "burnt\n"
            figures = split.per_message(1000)
        finally:
            child.kill()
    # Microseconds per message of 1,000: 0.2 s is 200.
    assert figures["im_server"] == 0
    assert 150 <= figures["bench"] < 1000
    assert figures["gateway"] >= CHILD_CPU_S * 1000 - 50
    # The machine's clock counts in ticks of 10 ms; it saw both burn.
    assert figures["machine"] >= figures["bench"] + figures["gateway"] - 30


def _row_with(item: str, extra: dict[str, object], server: str = "ejabberd", what: str = "") -> Row:
    return Row(server, item, what, 10, 10, 1.0, None, None, 1.0, True, "", extra=extra)


def _split_row(item: str, split: dict[str, float]) -> Row:
    return _row_with(item, {"cpu_us_per_message": split})


def test_the_cpu_lines_show_each_process_share_of_a_message() -> None:
    row = _split_row("b", {"machine": 430.0, "im_server": 280.0, "bench": 147.0, "other": 3.0})
    assert cpu_lines([row]) == [
        "cpu ejabberd b: machine 430 us/msg = im server 280 + bench 147 + other 3"
    ]
    assert cpu_lines([Row.failed("ejabberd", "c", "gateway", 10, "down")]) == []
    c = _row_with(
        "c",
        {
            "cpu_us_per_message": {"machine": 500.0, "gateway": 330.0},
            "gateway_cpu_us_per_message": {
                "event_loop": 110.0,
                "other_threads": 90.0,
                "admission_workers": 130.0,
            },
        },
    )
    assert cpu_lines([c]) == [
        "cpu ejabberd c: machine 500 us/msg = gateway 330",
        "cpu ejabberd c gateway: event loop 110 + other threads 90 + admission workers 130",
    ]


def test_the_gateways_budget_is_bs_machine_less_what_the_rest_of_c_spends() -> None:
    b = _split_row("b", {"machine": 440.0, "im_server": 290.0, "bench": 150.0, "other": 0.0})
    c = _split_row(
        "c",
        {"machine": 500.0, "im_server": 120.0, "bench": 45.0, "gateway": 330.0, "other": 5.0},
    )
    summed = _row_with("i", {"us_per_message": 250.0}, "local", PIECES_SUM)
    assert gateway_budgets([b, c]) == {
        "ejabberd": {"gateway_may_spend": 270.0, "gateway_spends": 330.0, "rounds": 1}
    }
    assert gateway_budgets([b, c, summed])["ejabberd"]["pieces_alone"] == 250.0
    assert budget_lines([b, c, summed]) == [
        "budget ejabberd c/b = 1.0: the gateway may spend 270 us/msg; it spends 330;"
        " its pieces alone (item i) 250"
    ]
    # Without b's split there is nothing to match.
    assert gateway_budgets([c, summed]) == {}


def test_item_i_measures_every_piece_and_adds_up_the_pieces_only() -> None:
    rows = gateway_pieces(2, 30.0)
    by_name = {row.description: row for row in rows}
    assert set(by_name) == {*pieces.PIECES, *pieces.PARTS, PIECES_SUM}
    assert all(row.complete and row.extra["us_per_message"] > 0 for row in rows)
    summed = sum(by_name[name].extra["us_per_message"] for name in pieces.PIECES)
    assert abs(by_name[PIECES_SUM].extra["us_per_message"] - summed) < 0.5
    # Each part is inside its piece: the signature inside the admission check.
    check = by_name[pieces.PIECES[0]].extra["us_per_message"]
    assert by_name[pieces.VERIFY].extra["us_per_message"] < check


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


def test_the_targets_are_issue_16s() -> None:
    def row(server: str, item: str, rate: float, p99_ms: float | None = None) -> Row:
        return Row(server, item, "", 10, 10, rate, None, p99_ms, 1.0, True, "")

    rows = [
        row("prosody", "a", 4000),
        row("prosody", "c", 1500),
        row("prosody", "d-flood", 40, p99_ms=60.0),
        row("ejabberd", "a", 9000),
        row("ejabberd", "b", 3000),
        row("ejabberd", "c", 3000),
        row("ejabberd", "d", 40, p99_ms=20.0),
    ]
    found = {(t.item, t.server, t.goal): t.met for t in targets(rows)}
    assert found == {
        ("c", "prosody", "c/a >= 0.35"): True,
        ("c", "ejabberd", "c/b >= 1.0"): True,
        ("d-flood", "prosody", "p99 ms <= 50"): False,
        ("d", "ejabberd", "p99 ms <= 50"): True,
    }


def test_a_frozen_heap_keeps_what_was_held_out_of_collections_until_the_block_ends() -> None:
    held = [[index] for index in range(1000)]
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() >= len(held)
        gc.collect()
        assert gc.get_freeze_count() >= len(held)  # a full pass leaves them frozen
    assert gc.get_freeze_count() == 0


SMALL_BUFFER = 4096


def _small_buffers(sock: socket.socket) -> socket.socket:
    """``sock`` with small buffers, set before it connects (or listens), so that the
    window the connection agrees on is small too."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def test_the_responder_reads_on_while_the_server_reads_none_of_its_receipts() -> None:
    """A server that writes everything before it reads a byte (as a server process
    blocked on a busy socket does) still gets every message answered: the responder
    never stops reading to wait for its receipts to be read."""
    # Receipts well beyond what the transport holds before it asks writers to wait
    # (64 KiB) and what the small socket buffers hold.
    count = 4000
    answered = asyncio.Event()
    receipts: list[int] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        for n in range(count):
            writer.write(
                f"<message from='app@x' id='m{n}'><body>{n:010d}</body>"
                "<request xmlns='urn:xmpp:receipts'/></message>".encode()
            )
            await writer.drain()  # blocks while the responder does not read
        data = b""
        while data.count(b"<received ") < count:
            data += await reader.read(1 << 16)
        receipts.append(data.count(b"<received "))
        answered.set()
        writer.close()
        await writer.wait_closed()

    listening = _small_buffers(socket.socket())
    listening.bind(("127.0.0.1", 0))
    listener = await asyncio.start_server(server, sock=listening)
    client = _small_buffers(socket.socket())
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, listening.getsockname())
    reader, writer = await asyncio.open_connection(sock=client)
    responder = ReceiptResponder(XmlStream(reader, writer), "alice@x/bench")
    responder.watched = frozenset({"m7", "m3999", "elsewhere"})
    began_ms = now_ms()
    responder.start(30.0)
    try:
        await asyncio.wait_for(answered.wait(), 20.0)
    finally:
        await responder.close()
        listener.close()
        await listener.wait_closed()
    assert receipts == [count]
    assert responder.received == responder.answered == count
    # The arrivals of the messages watched, and only those that came.
    assert responder.arrived_ms.keys() == {"m7", "m3999"}
    assert began_ms <= responder.arrived_ms["m7"] <= responder.arrived_ms["m3999"] <= now_ms()


def test_the_otp_stages_split_the_receipts_way_at_the_client() -> None:
    submitted = {"otp1": 1000, "otp2": 1000}
    stages = {
        "otp1": {"accepted": 1002, "dispatched": 1005, "delivered": 1030},
        "otp2": {"accepted": 1003, "dispatched": 1010, "delivered": 1050},
    }
    found = _stage_percentiles(submitted, stages, {"otp1": 1025, "otp2": 1020})
    assert found["receipt_p99_ms"] == 40.0
    assert (found["to_client_p50_ms"], found["to_client_p99_ms"]) == (10.0, 20.0)
    assert (found["back_p50_ms"], found["back_p99_ms"]) == (5.0, 30.0)
    # No arrival seen (a bench without the watch): the split is left empty.
    assert _stage_percentiles(submitted, stages, {})["back_p99_ms"] is None

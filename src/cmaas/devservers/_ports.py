"""Ports on loopback: choosing free ones, and asking who listens on them."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Args:
        host: Address to probe.

    Returns:
        A port number chosen by the kernel.

    Raises:
        OSError: If no socket can be bound on ``host``.
    """
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct ports on ``host`` that were free a moment ago.

    The ports come from below the kernel's ephemeral range. A port the kernel hands
    out itself can later become the *source* port of an outgoing connection (a client
    reconnecting while a server restarts), and the restarted server then fails to
    listen on it with EADDRINUSE. The probe sockets stay open until all ports are
    chosen, so the ports differ.

    Raises:
        OSError: If no free port is found on ``host``.
    """
    low, high = _LISTEN_PORTS[0], min(_LISTEN_PORTS[1], _ephemeral_low() - 1)
    randomly = random.SystemRandom()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _attempt in range(count * 200):
            if len(ports) == count:
                break
            port = randomly.randint(low, high)
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((host, port))
            except OSError:
                continue
            ports.append(port)
        if len(ports) < count:
            raise OSError(f"no {count} free ports between {low} and {high} on {host}")
        return ports


_LISTEN_PORTS = (20000, 32767)


def _ephemeral_low() -> int:
    """The lowest port the kernel may pick for outgoing connections (Linux)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too, so lingering TIME_WAIT sockets are no obstacle.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def listening_ports(pids: Sequence[int], host: str) -> set[int]:
    """Ports on which one of ``pids`` holds a listening TCP socket bound to ``host``.

    Asking the kernel who owns the socket (rather than connecting) tells our server apart
    from another program on the same port and leaves no connection noise in the logs.
    """
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    wanted = {socket.inet_aton(host), bytes(4)}
    ports: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A" or int(fields[9]) not in inodes:  # 0A = LISTEN
            continue
        ip_hex, port_hex = fields[1].split(":")
        # The kernel prints the address as a native-endian 32-bit number.
        if struct.pack("=I", int(ip_hex, 16)) in wanted:
            ports.add(int(port_hex, 16))
    return ports


def xmpp_answers(host: str, port: int, domain: str, timeout: float = 1.0) -> bool:
    """Whether a client stream header sent to ``host:port`` gets a stream header back.

    A listening socket is not enough: ejabberd binds its ports early in the boot but
    accepts connections only once fully started.
    """
    header = (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(header.encode())
            reply = b""
            while b"<stream:stream" not in reply:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                reply += chunk
            sock.sendall(b"</stream:stream>")
            return True
    except OSError:  # includes socket timeouts
        return False

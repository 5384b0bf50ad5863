"""A throwaway 2-node ejabberd 23.01 cluster on loopback, for scale-out tests."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cmaas.devservers._checks import check_domain
from cmaas.devservers._errors import DevServerError
from cmaas.devservers._files import with_log
from cmaas.devservers._server import start_server
from cmaas.devservers.ejabberd import EjabberdServer

__all__ = ["EjabberdCluster", "start_ejabberd_cluster"]

_JOIN_TIMEOUT = 60.0


@dataclass
class EjabberdCluster:
    """Two ejabberd nodes (each an :class:`EjabberdServer` with its own config dir, spool,
    ports and node name) sharing one cookie, joined into one cluster: one user database,
    one component domain served from both.

    Attributes:
        nodes: The first node, which the second joined, and the second.
        instance_hosts: The component listener's extra hosts, one per gateway instance
            for its pings; the listener has ``global_routes: false``.
    """

    nodes: tuple[EjabberdServer, EjabberdServer]
    instance_hosts: tuple[str, ...]

    @property
    def domain(self) -> str:
        return self.nodes[0].domain

    @property
    def component_domain(self) -> str:
        return self.nodes[0].component_domain

    def register_user(self, username: str, password: str) -> None:
        """Create ``username@domain`` once, for both nodes (their user table is shared).

        Raises: as :meth:`EjabberdServer.register_user`.
        """
        self.nodes[0].register_user(username, password)

    def members(self) -> set[str]:
        """The running members, as the first node sees them.

        Raises:
            DevServerError: If ejabberdctl fails on the first node.
        """
        first = self.nodes[0]
        result = first._ctl("list_cluster")
        first._check_exit("ejabberdctl list_cluster", result)
        return {line.strip().strip("'") for line in result.stdout.split() if "@" in line}

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (0 or 1), as a crash would; the other runs on.

        Raises:
            DevServerError: If the process survives SIGKILL.
        """
        self.nodes[index].kill()

    def revive(self, index: int) -> None:
        """Start node ``index`` again after :meth:`kill`; returns once it is back in the
        cluster (its Mnesia directory remembers the cluster) and serves again.

        Raises:
            DevServerError: If it fails to start or to rejoin in time.
        """
        node = self.nodes[index]
        node.start()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        while node._node not in self.members():
            if time.monotonic() >= deadline:
                raise DevServerError(
                    with_log(
                        f"{node._node} not back in the cluster after {_JOIN_TIMEOUT:g} s",
                        node._log_path(),
                    )
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop both nodes cleanly, the joined one first.

        Raises:
            DevServerError: As :meth:`EjabberdServer.stop`.
        """
        for node in reversed(self.nodes):
            node.stop()


def start_ejabberd_cluster(
    workdir: Path,
    *,
    domain: str = "cmaas.test",
    component_domain: str = "gateway.cmaas.test",
    instance_hosts: Sequence[str] = (),
    timeout: float | None = None,
) -> EjabberdCluster:
    """Start two ejabberd nodes on 127.0.0.1 and join the second to the first.

    Each node is started as :func:`~cmaas.devservers.start_ejabberd` starts one, in
    ``workdir / "n1"`` and ``workdir / "n2"``, with one cookie and one component secret;
    epmd and the Erlang distribution stay on 127.0.0.1.

    Args:
        instance_hosts: One host per gateway instance for its pings, added to the
            component listener of both nodes (with ``global_routes: false``).

    Raises:
        ValueError: If a domain is unusable.
        DevServerError: If a node fails to start or the join fails; nodes already
            started are stopped first.
    """
    for host in instance_hosts:
        check_domain(host, "instance host")
    options = {"_cookie": secrets.token_hex(16), "_instance_hosts": tuple(instance_hosts)}
    secret = secrets.token_urlsafe(24)
    started: list[EjabberdServer] = []
    try:
        for name in ("n1", "n2"):
            started.append(
                start_server(
                    EjabberdServer,
                    workdir / name,
                    domain=domain,
                    component_domain=component_domain,
                    component_secret=secret,
                    timeout=timeout,
                    options=options,
                )
            )
        first, second = started
        cluster = EjabberdCluster((first, second), tuple(instance_hosts))
        _join(second, first, cluster)
    except BaseException:
        for node in reversed(started):
            node.stop()
        raise
    return cluster


def _join(joining: EjabberdServer, first: EjabberdServer, cluster: EjabberdCluster) -> None:
    """``join_cluster`` restarts the joining node's ejabberd with the first node's Mnesia
    tables; it is done when the first node lists both and the joining one listens again.
    """
    log = joining._log_path()
    log_offset = log.stat().st_size if log.exists() else 0
    joining._check_exit("ejabberdctl join_cluster", joining._ctl("join_cluster", first._node))
    deadline = time.monotonic() + _JOIN_TIMEOUT
    while {first._node, joining._node} - cluster.members():
        if time.monotonic() >= deadline:
            raise DevServerError(
                with_log(f"{joining._node} not in the cluster after {_JOIN_TIMEOUT:g} s", log)
            )
        time.sleep(0.2)
    joining._wait_ready(log_offset, deadline)

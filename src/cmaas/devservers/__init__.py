"""Throwaway Prosody and ejabberd servers on loopback, for tests and the demo; and
throwaway PostgreSQL servers on a Unix socket (:func:`start_postgres`).

Usage::

    server = start_prosody(tmp_path / "prosody")      # or start_ejabberd(...)
    server.register_user("alice", "secret")
    ...  # connect clients to server.c2s_port, the gateway to server.component_port
    server.restart()                                  # same ports, config and data
    server.stop()

Requirements: Debian's ``prosody`` and ``ejabberd`` packages (:func:`ensure_installed`
installs them when running as root) and root privileges, because the servers run as the
users ``prosody`` and ``ejabberd``.

Where the files go: each server gets a fresh directory ``/tmp/cmaas-devservers/<kind>-XXXX``
(``XmppServer.workdir``) holding its config, data, logs and pid file.
``/tmp/cmaas-devservers`` is created 0755 and owned by root so that the server users can
reach it; the directory a caller passes (typically a pytest ``tmp_path``, which is 0700
under ``/tmp/pytest-of-root`` and reset to 0700 by every new pytest session) is never
chmod-ed. It receives a symlink to the server directory instead. At interpreter exit,
servers still running are stopped, their logs are copied into the caller's directory and
the server directory is removed.

The configs are the templates in the repository's ``prosody-config/`` and
``ejabberd-config/`` directories (see the comments at their top).
"""

from cmaas.devservers._errors import DevServerError
from cmaas.devservers._files import find_config_dir
from cmaas.devservers._install import ensure_installed
from cmaas.devservers._ports import free_port
from cmaas.devservers._processes import cmaas_executable
from cmaas.devservers._server import XmppServer
from cmaas.devservers.ejabberd import start_ejabberd
from cmaas.devservers.ejabberd_cluster import EjabberdCluster, start_ejabberd_cluster
from cmaas.devservers.postgres import PostgresServer, start_postgres
from cmaas.devservers.prosody import start_prosody

__all__ = [
    "DevServerError",
    "EjabberdCluster",
    "PostgresServer",
    "XmppServer",
    "cmaas_executable",
    "ensure_installed",
    "find_config_dir",
    "free_port",
    "start_ejabberd",
    "start_ejabberd_cluster",
    "start_postgres",
    "start_prosody",
]

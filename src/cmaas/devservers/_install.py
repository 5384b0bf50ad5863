"""Installing Prosody and ejabberd with apt when they are missing."""

from __future__ import annotations

import os
import shutil

from cmaas.devservers._errors import DevServerError
from cmaas.devservers._files import tail_text
from cmaas.devservers._processes import SAFE_PATH, output_of, run

_apt_updated = False


def ensure_installed() -> None:
    """Make sure Prosody and ejabberd are installed, installing them with apt if needed.

    As root, a missing server triggers ``apt-get update`` (once per process) and
    ``apt-get install -y prosody ejabberd``. Nothing is ever skipped silently.

    Raises:
        DevServerError: If a server is missing and this process is not root, or if apt
            fails, or if the programs are still missing after installing.
    """
    global _apt_updated
    programs = ("prosody", "prosodyctl", "ejabberdctl", "runuser")
    missing = [p for p in programs if shutil.which(p, path=SAFE_PATH) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise DevServerError(
            f"missing {', '.join(missing)}: install the Debian packages with "
            "`sudo apt-get install -y prosody ejabberd` (util-linux provides runuser)"
        )
    commands: list[tuple[list[str], float]] = []
    if not _apt_updated:
        commands.append((["apt-get", "update"], 300.0))
    commands.append((["apt-get", "install", "-y", "prosody", "ejabberd"], 900.0))
    for argv, timeout in commands:
        result = run(
            argv,
            what="installing the XMPP servers",
            timeout=timeout,
            extra_env={"DEBIAN_FRONTEND": "noninteractive"},
        )
        if result.returncode != 0:
            raise DevServerError(
                f"`{' '.join(argv)}` exited with {result.returncode}:\n"
                + tail_text(output_of(result), 30)
            )
        if argv[1] == "update":
            _apt_updated = True
    still_missing = [p for p in programs if shutil.which(p, path=SAFE_PATH) is None]
    if still_missing:
        raise DevServerError(f"still missing after apt-get install: {', '.join(still_missing)}")

"""``cmaas gateway run``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from cmaas.cli.logging_setup import configure_logging
from cmaas.settings import load_settings

__all__ = ["add_parser"]


def add_parser(parts: Any) -> None:
    parser = parts.add_parser("gateway", help="the messaging gateway (XEP-0114 component)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="connect to the IM server and serve until SIGTERM/SIGINT",
        description="Run the gateway: the component link (reconnecting with capped"
        " exponential backoff) and the HTTP listener. Stops cleanly on SIGTERM or SIGINT.",
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from cmaas.assembly import run_gateway

    settings = load_settings(env_file=Path(args.env_file))
    configure_logging(settings.log_level)
    asyncio.run(run_gateway(settings))
    return 0

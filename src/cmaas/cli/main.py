"""``cmaas``: one console command with subcommands for each part of CMaaS."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cmaas import __version__
from cmaas.cli import admin, client, dev, device, gateway
from cmaas.errors import CmaasError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmaas",
        description="Confidential Messaging as a Service for XMPP. Settings come from"
        " CMAAS_* environment variables and a .env file (see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"cmaas {__version__}")
    parser.add_argument(
        "--env-file",
        default=".env",
        metavar="PATH",
        help="dotenv file read before the environment by every subcommand"
        " (default: .env; the environment wins)",
    )
    parts = parser.add_subparsers(dest="part", required=True, metavar="PART")
    gateway.add_parser(parts)
    admin.add_parser(parts)
    client.add_parser(parts)
    device.add_parser(parts)
    dev.add_parser(parts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except CmaasError as exc:
        print(f"cmaas: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

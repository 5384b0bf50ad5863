"""Logging for every ``cmaas`` subcommand, in a module of its own so the subcommands
need not import ``cmaas.cli.main``, which imports them."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # slixmpp logs every stanza sent and received at DEBUG; those carry credentials
    # shown once in ad-hoc results, so stanza dumps are never logged.
    logging.getLogger("slixmpp.xmlstream.xmlstream").setLevel(logging.INFO)
    # aiosqlite logs every call with its arguments at DEBUG: SQL parameters such as
    # the phone number looked up or a blob's capability id, so those are never logged.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)

"""The abuse suite reports how many hostile inputs it ran."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from .tally import CASES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
        terminalreporter.write_line(
            f"abuse suite: {sum(CASES.values())} hostile inputs answered ({parts})"
        )


# CI runs a fixed sequence of examples so that a red run is reproducible; developers'
# runs draw fresh ones and keep failures in .hypothesis/ for replay.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

"""The CMAAS_* variables a CLI command reads: the ``--env-file`` first, the environment over it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dotenv import dotenv_values

__all__ = ["variables"]


def variables(args: argparse.Namespace) -> dict[str, str]:
    merged: dict[str, str] = {}
    env_file = Path(args.env_file)
    if env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged

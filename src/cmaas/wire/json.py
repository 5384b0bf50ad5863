"""Reading JSON from the other side strictly, the same way over HTTP and ad-hoc."""

from __future__ import annotations

import json
from typing import Any

from cmaas.wire.errors import WireError

__all__ = ["parse_json_body"]


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        # Parsers disagree on which duplicate wins; CMaaS refuses to guess.
        raise WireError("the JSON body repeats a key")
    return dict(pairs)


def parse_json_body(body: bytes | str) -> object:
    """Decode a UTF-8 JSON body, refusing repeated keys.

    Raises: WireError: Not UTF-8, not JSON, nested too deep, or a repeated key.
    """
    try:
        return json.loads(body, object_pairs_hook=_unique)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise WireError(f"the body is not JSON: {error}") from error

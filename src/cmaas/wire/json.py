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


def _no_constant(name: str) -> object:
    raise WireError(f"the body is not JSON: {name} is not a JSON number")


def parse_json_body(body: bytes | str) -> object:
    """Decode a UTF-8 JSON body, refusing repeated keys.

    Raises: WireError: Not UTF-8 (a byte-order mark, UTF-16 or UTF-32 included), not
        JSON (NaN and Infinity included), nested too deep, a number with more digits
        than Python converts, or a repeated key.
    """
    try:
        # json.loads would guess UTF-16/32 and skip a BOM in bytes; the body is signed
        # as bytes, so exactly one reading of them is allowed.
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        return json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except WireError:
        raise
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and an integer beyond
        # sys.get_int_max_str_digits().
        raise WireError(f"the body is not JSON: {error}") from error

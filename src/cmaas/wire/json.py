"""Reading JSON from the other side strictly, the same way over HTTP and ad-hoc."""

from __future__ import annotations

import json
from typing import Any

from cmaas.wire.errors import WireError

__all__ = ["parse_json_body"]


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)
    if len(unique) != len(pairs):
        # Parsers disagree on which duplicate wins; CMaaS refuses to guess.
        raise WireError("the JSON body repeats a key")
    return unique


def _no_constant(name: str) -> object:
    raise WireError(f"the body is not JSON: {name} is not a JSON number")


def parse_json_body(body: bytes | str) -> object:
    """Decode a UTF-8 JSON body, refusing repeated keys.

    Raises: WireError: Not UTF-8 (a byte-order mark, UTF-16 or UTF-32 included), not
        JSON (NaN and Infinity included), nested too deep, a number with more digits
        than Python converts, a repeated key, or a string with an unpaired surrogate
        escape (``"\\ud800"``), which has no UTF-8 form to store or pass on.
    """
    try:
        # json.loads would guess UTF-16/32 and skip a BOM in bytes; the body is signed
        # as bytes, so exactly one reading of them is allowed.
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        value = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except WireError:
        raise
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and an integer beyond
        # sys.get_int_max_str_digits().
        raise WireError(f"the body is not JSON: {error}") from error
    # Only a \u escape can make a lone surrogate: most bodies need no walk.
    if "\\u" in text and _holds_lone_surrogate(value):
        raise WireError("the body is not JSON text: a string holds an unpaired surrogate")
    return value


def _holds_lone_surrogate(value: object) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False

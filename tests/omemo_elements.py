"""Legacy-OMEMO ``<encrypted/>`` elements as clients write them, for unit and abuse tests.

The keys, IV and payload are random bytes of the right sizes: the gateway reads only the
header (``sid``, each key's ``rid``, the IV's size) and relays the rest unopened.
"""

from __future__ import annotations

import base64
import os
import xml.etree.ElementTree as ET

AXOLOTL = "eu.siacs.conversations.axolotl"


def b64(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def encrypted_xml(
    sid: object = 7,
    rids: tuple[object, ...] = (9,),
    *,
    payload: bool = True,
    iv: str | None = None,
    namespace: str = AXOLOTL,
) -> str:
    """An ``<encrypted/>`` element sealed by device ``sid`` for devices ``rids``: a
    message, or without ``payload`` a key transport. ``iv`` replaces the 12-byte IV."""
    keys = "".join(f"<key rid='{rid}'>{b64(48)}</key>" for rid in rids)
    body = f"<payload>{b64(40)}</payload>" if payload else ""
    return (
        f"<encrypted xmlns='{namespace}'><header sid='{sid}'>{keys}"
        f"<iv>{b64(12) if iv is None else iv}</iv></header>{body}</encrypted>"
    )


def shape(element: ET.Element | str) -> tuple[object, ...]:
    """An element as nested tuples of tag, attributes, text and children: equal for the
    same XML however its namespaces are spelt."""
    if isinstance(element, str):
        element = ET.fromstring(element)  # noqa: S314 - the tests' own XML
    return (
        element.tag,
        sorted(element.attrib.items()),
        (element.text or "").strip(),
        [shape(child) for child in element],
    )

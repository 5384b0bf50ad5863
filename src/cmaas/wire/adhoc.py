"""How the wire contract travels in ad-hoc commands (XEP-0050), for bots without HTTP."""

from __future__ import annotations

__all__ = ["ANSWER_FIELD", "COMMAND_NODE_PREFIX"]

COMMAND_NODE_PREFIX = "urn:cmaas:cmd:"
"""Every CMaaS command's node starts so; ``message-send`` is ``urn:cmaas:cmd:message-send``."""

ANSWER_FIELD = "json"
"""The result form's field that holds the whole answer as the HTTP API would give it;
the other fields show the same values to people."""

"""The reference device: an XMPP client that owns device keys and opens sealed messages."""

__all__: list[str] = []

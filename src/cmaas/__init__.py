"""CMaaS: Confidential Messaging as a Service for XMPP."""

__all__ = ["__version__"]

__version__ = "0.1.0"

"""Benchmarks of issue 6, run with ``python -m bench`` (see ``bench/__main__.py``).

Items so far: (a) the physical limit, a raw XEP-0114 injector into a raw receipt
responder; (b) the peer, ejabberd's ``send_message`` HTTP command.
"""

"""The ``cmaas`` command line."""

"""The root of every error CMaaS raises on purpose."""

__all__ = ["CmaasError", "InputRejected"]


class CmaasError(Exception):
    """Base class of every deliberate CMaaS error.

    Each package derives its own root from this one (``KeystoreError``,
    ``SettingsError``, ...), so callers can catch a whole layer at once while
    unexpected bugs (``TypeError`` and friends) still surface as themselves.
    """


class InputRejected(CmaasError):
    """Values a person typed were refused; nothing was changed.

    Front ends show :attr:`problems` next to the form so it can be corrected.

    Attributes:
        problems: Field name to a message fit to show to the person who typed it.
    """

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("; ".join(f"{name}: {text}" for name, text in self.problems.items()))

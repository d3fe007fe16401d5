"""Exceptions that carry a message fit to show a user as is (what, where, and how to fix it)."""


class EvorankError(Exception):
    """Base class: the CLI prints these without a traceback."""


class CollectionError(EvorankError):
    """A collection cannot be loaded: unknown id, missing or malformed file, nothing judged."""


class ProgramError(EvorankError):
    """A ranking program failed. `reason` is machine-readable (``invalid_scores:nan``, ``exception:KeyError``)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

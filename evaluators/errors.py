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


class OutputPathError(EvorankError):
    """An output file or folder that cannot be written there; the message names the path and the cause."""


def check_output_path(path, *, folder: bool = False, what: str = "output"):
    """Raise ``OutputPathError`` unless ``path`` can be written as a file (or, with ``folder``, used as a folder),
    creating the folders above it as needed; leaves nothing behind. Commands call it before any work, so that a
    path that cannot be written costs one line and no half-made output.

    The nearest existing folder above ``path`` is tried by making (and removing) a temporary folder in it: that is
    what the command will do, and no permission bit tells it for every file system (``/proc`` accepts nothing,
    a read-only mount refuses root too)."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    kind = "folder" if folder else "file"
    if path.exists():
        if path.is_dir() != folder:
            found = "a folder" if path.is_dir() else "a file"
            raise OutputPathError(f"cannot use {path} as the {what} {kind}: it is {found}; give a {kind} path")
        if not folder:
            if not os.access(path, os.W_OK):
                raise OutputPathError(f"cannot write {path}: the file is not writable (permission denied or a "
                                      "read-only file system); choose another path")
            return
        base = path
    else:
        base = path.parent
        while not base.exists() and base != base.parent:
            base = base.parent
    if not base.is_dir():
        raise OutputPathError(f"cannot create {path}: {base} is a file, not a folder; choose another path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".evorank-write-check-", dir=base))
    except OSError as e:
        raise OutputPathError(f"cannot write {path}: {base} does not accept new files or folders ({e.strerror}); "
                              "choose a location you can write to") from None

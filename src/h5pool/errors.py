"""Errors raised for problems with the data.

Every problem with a corpus raises a :class:`CorpusError` subclass whose message names
the file (and the key and index where they matter), so that one bad file among
thousands is found from the traceback alone.  HDF5's own message is kept as
``__cause__``.  Each subclass also derives from the builtin that a caller would
naturally catch (``FileNotFoundError``, ``KeyError``, ``ValueError``), so existing
``except`` clauses keep working.
"""

from __future__ import annotations

import errno


class CorpusError(Exception):
    """Base class of every data problem h5pool reports."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        #: The file's row (local sample index) that failed, where one did.
        self.row: int | None = None

    def __str__(self) -> str:
        # KeyError's str() adds quotes around the message; keep messages plain.
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled with its path and row: scanning processes send errors back."""
        return (_rebuilt, (type(self), str(self), self.path, self.row))


def _rebuilt(
    kind: type[CorpusError], message: str, path: str | None, row: int | None
) -> CorpusError:
    error = kind(message, path=path)
    error.row = row
    return error


class MissingFileError(CorpusError, FileNotFoundError):
    """A path that was given, or indexed earlier, does not exist."""


class NoFilesFoundError(CorpusError, FileNotFoundError):
    """A directory or glob pattern matched no HDF5 file."""


class UnreadableFileError(CorpusError, ValueError):
    """The file exists but HDF5 cannot open it: not HDF5, empty, truncated."""


class MissingKeyError(CorpusError, KeyError):
    """A requested dataset or group is not in the file."""


class LayoutError(CorpusError, ValueError):
    """The file's contents do not fit the requested layout (unequal lengths, scalars)."""


class FileChangedError(CorpusError):
    """The file no longer matches the index built from it (replaced or rewritten)."""


class AccessDeniedError(CorpusError, PermissionError):
    """The storage refused to serve the file (credentials, policy)."""


class SourceUnavailableError(CorpusError, ConnectionError):
    """The storage holding the file could not be reached (after bounded retries)."""


class ReadError(CorpusError, OSError):
    """Reading a sample failed after the file had been opened."""


class DescriptorLimitError(OSError):
    """The process ran out of file descriptors and the pool had nothing left to close.

    Not a :class:`CorpusError`: the data is fine, the process limit is too low for
    the handles the caller keeps pinned.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.EMFILE, message)

    def __str__(self) -> str:
        return str(self.args[1])

"""Errors that name the sample: which global index a failed read was for.

The layers below know files and rows; the user asked for sample numbers.  So
the read paths re-raise a :class:`~h5pool.errors.CorpusError` of the same class
with ``sample N:`` in front, keeping the original cause.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from h5pool._typing import Indices, IntArray
from h5pool.errors import CorpusError


def flat(indices: Indices) -> list[int]:
    """``indices`` as a flat list of ints (a tensor, an array or a list)."""
    return [int(i) for i in np.asarray(indices).reshape(-1).tolist()]


def position_of(
    files: Sequence[str], exc: CorpusError, file_numbers: IntArray, rows: IntArray
) -> int:
    """The first request position of the file (and row) an error names, else 0."""
    if exc.path in files:
        matches = file_numbers == files.index(exc.path)
        if exc.row is not None and (matches & (rows == exc.row)).any():
            matches &= rows == exc.row
        if matches.any():
            return int(np.flatnonzero(matches)[0])
    return 0


def naming_sample(exc: CorpusError, index: int) -> CorpusError:
    """The same error class, with the global sample index in front of the message."""
    if str(exc).startswith("sample "):
        return exc
    return type(exc)(f"sample {index}: {exc}", path=exc.path)

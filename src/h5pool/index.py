"""The global sample index: which file and which local row a global index means.

Stored as a handful of numpy arrays (per-file counts and their cumulative ends,
size and mtime stamps, paths packed as bytes) rather than per-sample or
per-file Python objects, so memory and pickle size grow with the number of
files at a few dozen bytes each; DataLoader workers then copy kilobytes, not
the gigabyte a 10-million-entry dict costs.  A global index is mapped back with
``searchsorted`` on the cumulative ends, as webdataset's ``wids`` does.
"""

from __future__ import annotations

import bisect
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from h5pool.byte_map import KeyMaps
from h5pool.errors import FileChangedError
from h5pool.groups import GroupTable
from h5pool.members import MemberNames
from h5pool.paths import PathList
from h5pool.pooled_file import PooledFile

Layout = Literal["rows", "members", "groups"]
IntArray = npt.NDArray[np.int64]


def as_index(index: object) -> int:
    """``index`` as an int (anything with ``__index__``: numpy and torch integers too);
    ``ds[1.9]`` or ``ds["3"]`` is a ``TypeError``, not row 1 or 3."""
    if isinstance(index, bool | np.bool_):
        raise TypeError("sample indices must be integers, not bool")
    try:
        return operator.index(index)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"sample indices must be integers, not {type(index).__name__}") from None


@dataclass
class CorpusIndex:
    """Per-file sample counts of a corpus, and the layout they were counted for."""

    files: PathList
    counts: IntArray
    layout: Layout
    keys: tuple[str, ...]
    group: str
    sizes: IntArray
    mtimes: IntArray
    #: For the "members" layout: every file's member names (natural sort within
    #: a file), kept per file as a pattern where they follow one.
    members: MemberNames = field(default_factory=MemberNames.empty)
    #: For the "rows" layout: each key's byte maps (see h5pool.byte_map).
    maps: dict[str, KeyMaps] = field(default_factory=dict)
    #: For the "groups" layout: groups per file, each group's length, the windowing
    #: (the group names are in ``members``).
    groups: GroupTable = field(default_factory=GroupTable)
    #: Files written under SWMR: growing (size and mtime up) is not a change.
    appending: bool = False
    ends: IntArray = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.files, PathList):
            self.files = PathList(self.files)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.sizes = np.asarray(self.sizes, dtype=np.int64)
        self.mtimes = np.asarray(self.mtimes, dtype=np.int64)
        self.ends = np.cumsum(self.counts, dtype=np.int64)

    @property
    def starts(self) -> IntArray:
        """Each file's first global index (derived, not stored)."""
        starts: IntArray = self.ends - self.counts
        return starts

    def start_of(self, file_number: int) -> int:
        return int(self.ends[file_number] - self.counts[file_number])

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the derived ``ends``: workers receive fewer bytes."""
        state = dict(self.__dict__)
        del state["ends"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.ends = np.cumsum(self.counts, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes the index's arrays hold: what each process keeps of it."""
        arrays = [self.counts, self.ends, self.sizes, self.mtimes]
        held = sum(a.nbytes for a in arrays) + self.files.nbytes + self.members.nbytes
        return held + sum(m.nbytes for m in self.maps.values()) + self.groups.nbytes

    def apply_windows(self, window: int, stride: int) -> None:
        """Count the "groups" layout's samples as whole groups (``window`` 0) or as
        windows of ``window`` rows every ``stride`` rows."""
        self.groups.window, self.groups.stride = window, stride
        self.groups._firsts = None
        self.counts = self.groups.file_counts()
        self.ends = np.cumsum(self.counts, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def normalise(self, index: int) -> int:
        """Apply Python's negative-index rule and bounds, raising ``IndexError``."""
        total = len(self)
        position = as_index(index)
        if position < 0:
            position += total
        if not 0 <= position < total:
            raise IndexError(f"sample index {index} out of range for {total} samples")
        return position

    def locate(self, index: int) -> tuple[int, int]:
        """Return ``(file_number, local_index)`` for a global sample index."""
        position = self.normalise(index)
        file_number = bisect.bisect_right(self.ends, position)
        return file_number, position - self.start_of(file_number)

    def locate_many(self, indices: Sequence[int] | IntArray) -> tuple[IntArray, IntArray]:
        """Vectorised :meth:`locate`: file numbers and local indices, request order."""
        given = np.asarray(indices)
        if given.size and given.dtype.kind not in "iu":
            raise TypeError(f"sample indices must be integers, not {given.dtype}")
        positions = given.astype(np.int64, copy=False).reshape(-1)
        total = len(self)
        positions = np.where(positions < 0, positions + total, positions)
        if positions.size and (positions.min() < 0 or positions.max() >= total):
            bad = [int(i) for i in np.asarray(indices).reshape(-1) if not -total <= int(i) < total]
            raise IndexError(f"sample index {bad[0]} out of range for {total} samples")
        file_numbers = np.searchsorted(self.ends, positions, side="right").astype(np.int64)
        starts = self.ends[file_numbers] - self.counts[file_numbers]
        return file_numbers, positions - starts

    def check_unchanged(self, entry: PooledFile, file_number: int) -> None:
        """Refuse a file replaced or rewritten since it was indexed (an ``fstat``).

        Readers call it once per opened handle, never per sample.
        """
        expected = (int(self.sizes[file_number]), int(self.mtimes[file_number]))
        found = entry.stamp()
        grown = self.appending and found[0] >= expected[0] and found[1] >= expected[1]
        if found != expected and not grown:
            raise FileChangedError(
                f"{entry.path}: file changed since it was indexed "
                f"(size, mtime_ns) was {expected}, now {found}; rebuild the dataset",
                path=entry.path,
            )

    def member_name(self, file_number: int, local_index: int) -> str:
        return self.members.name(file_number, local_index)

    def same_entries(self, other: CorpusIndex) -> bool:
        """True when ``other`` indexes the same files, unchanged, the same way."""
        return (
            self.files == other.files
            and (self.layout, self.keys, self.group) == (other.layout, other.keys, other.group)
            and np.array_equal(self.counts, other.counts)
            and np.array_equal(self.sizes, other.sizes)
            and np.array_equal(self.mtimes, other.mtimes)
            and self.members == other.members
            and np.array_equal(self.groups.per_file, other.groups.per_file)
            and np.array_equal(self.groups.lengths, other.groups.lengths)
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index as one compressed ``.npz`` file, atomically (see
        :mod:`h5pool.index_cache`)."""
        from h5pool.index_cache import save_index

        save_index(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorpusIndex:
        """Read an index cache, validating it; a bad one is an ``IndexCacheError``."""
        from h5pool.index_cache import load_index

        return load_index(path)

"""The global sample index: which file and which local row a global index means.

Stored as a handful of numpy arrays (per-file counts and their cumulative ends,
size and mtime stamps, paths packed as bytes) rather than per-sample or
per-file Python objects, so memory and pickle size grow with the number of
files at a few dozen bytes each; DataLoader workers then copy kilobytes, not
the gigabyte a 10-million-entry dict costs.  A global index is mapped back with
``searchsorted`` on the cumulative ends, as webdataset's ``wids`` does.
"""

from __future__ import annotations

import array
import bisect
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.errors import FileChangedError
from h5pool.hdf5.byte_map import KeyMaps, KeySpec
from h5pool.index.cache import IndexCacheError, check_maps, check_members, read_arrays, write_arrays
from h5pool.index.groups import GroupTable
from h5pool.index.member_names import MemberNames
from h5pool.index.paths import PathList
from h5pool.pool.pooled_file import PooledFile

Layout = Literal["rows", "members", "groups"]


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
    """Per-file sample counts of a corpus, and the layout they were counted for.

    A global index maps to (file, local row) with ``searchsorted`` on the
    cumulative counts; memory and pickle size grow with files, not samples.
    Built by :func:`~h5pool.index.obtain.obtain_index`; saved and loaded with
    :meth:`save` and :meth:`load`.
    """

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
    #: For the "rows" layout: each key's byte maps (see h5pool.hdf5.byte_map).
    maps: dict[str, KeyMaps] = field(default_factory=dict)
    #: For the "groups" layout: groups per file, each group's length, the windowing
    #: (the group names are in ``members``).
    groups: GroupTable = field(default_factory=GroupTable)
    #: Files written under SWMR: growing (size and mtime up) is not a change.
    appending: bool = False
    #: ``time.monotonic()`` when every file's stamp was last read from the
    #: storage (a scan, or ``verify="stat"``); ``None`` when the cache was trusted.
    verified_at: float | None = field(default=None, compare=False)
    ends: IntArray = field(init=False)
    #: ``(ends it was made from, ends, starts, total)`` as ``array.array``: ``ds[i]``
    #: bisects it with ints, 8 bytes per file (a numpy array makes an object
    #: per comparison; a list costs 36 bytes per file).
    _lookup: tuple[Any, ...] | None = field(init=False, default=None, repr=False, compare=False)

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
        state["_lookup"] = None
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
        lookup = self._lookup
        if lookup is None or lookup[0] is not self.ends:
            lookup = self._lookup = (
                self.ends,
                array.array("q", self.ends.tobytes()),
                array.array("q", self.starts.tobytes()),
                len(self),
            )
        _, ends, starts, total = lookup
        position = index if type(index) is int and 0 <= index < total else self.normalise(index)
        file_number = bisect.bisect_right(ends, position)
        return file_number, position - starts[file_number]

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

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Write the index as one compressed ``.npz`` file, atomically.

        Parameters
        ----------
        path
            The file to write; its folder must exist.
        extra
            JSON metadata kept beside the arrays (what the cache was built from).
        """
        meta = {
            "layout": self.layout,
            "keys": list(self.keys),
            "group": self.group,
            "root": self.files.root,
            "specs": {key: [s.to_json() for s in m.specs] for key, m in self.maps.items()},
            "map_keys": list(self.maps),
            **(extra or {}),
        }
        write_arrays(path, meta, _arrays_of(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorpusIndex:
        """Read an index written by :meth:`save`, validating it.

        Raises
        ------
        IndexCacheError
            When the file is of another format, damaged or inconsistent.
        FileNotFoundError
            When there is no such file.
        """
        return cls.read(path)[0]

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> tuple[CorpusIndex, dict[str, Any]]:
        """The index of :meth:`load` and the metadata saved with it."""
        meta, arrays = read_arrays(path)
        try:
            index = _index_of(meta, arrays)
            _check_consistent(index)
        except (KeyError, TypeError, ValueError) as exc:
            name = os.fspath(path)
            raise IndexCacheError(f"{name}: inconsistent index cache: {exc}", path=name) from exc
        return index, meta


def save_index(
    index: CorpusIndex, path: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> None:
    """``index.save(path, extra)``: the name the cache's callers use."""
    index.save(path, extra)


def read_cache(path: str | os.PathLike[str]) -> tuple[CorpusIndex, dict[str, Any]]:
    """``CorpusIndex.read(path)``: the cached index and its metadata."""
    return CorpusIndex.read(path)


# -- the cache file's arrays --------------------------------------------------------


def _arrays_of(index: CorpusIndex) -> dict[str, npt.NDArray[Any]]:
    _, blob, offsets = index.files.arrays()
    arrays: dict[str, npt.NDArray[Any]] = {
        "paths_blob": blob,
        "paths_offsets": offsets,
        "counts": index.counts,
        "sizes": index.sizes,
        "mtimes": index.mtimes,
    }
    if index.layout in ("members", "groups"):
        arrays.update(index.members.arrays())
    if index.layout == "groups":
        arrays["groups_per_file"] = index.groups.per_file
        arrays["groups_lengths"] = index.groups.lengths
    for number, key_maps in enumerate(index.maps.values()):
        arrays[f"map{number}_spec_ids"] = key_maps.spec_ids
        arrays[f"map{number}_positions"] = key_maps.positions
        arrays[f"map{number}_chunks"] = key_maps.chunks
    return arrays


def _index_of(meta: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> CorpusIndex:
    files = PathList.from_arrays(str(meta["root"]), arrays["paths_blob"], arrays["paths_offsets"])
    layout = meta["layout"]
    if layout not in ("rows", "members", "groups"):
        raise ValueError(f"unknown layout {layout!r}")
    maps = {
        key: KeyMaps(
            [KeySpec.from_json(s) for s in meta["specs"][key]],
            np.asarray(arrays[f"map{number}_spec_ids"], dtype=np.int32),
            np.asarray(arrays[f"map{number}_positions"], dtype=np.int64),
            np.asarray(arrays[f"map{number}_chunks"], dtype=np.int64).reshape(-1, 3),
        )
        for number, key in enumerate(meta["map_keys"])
    }
    named = layout in ("members", "groups")
    members = MemberNames.from_arrays(arrays, len(files)) if named else MemberNames.empty()
    groups = (
        GroupTable(arrays["groups_per_file"], arrays["groups_lengths"])
        if layout == "groups"
        else GroupTable()
    )
    return CorpusIndex(
        files=files,
        counts=arrays["counts"],
        layout=layout,
        keys=tuple(str(k) for k in meta["keys"]),
        group=str(meta["group"]),
        sizes=arrays["sizes"],
        mtimes=arrays["mtimes"],
        members=members,
        maps=maps,
        groups=groups,
    )


def _check_consistent(index: CorpusIndex) -> None:
    """Every check a damaged or hand-edited cache could fail; ValueError naming it."""
    files = len(index.files)
    for name in ("counts", "sizes", "mtimes"):
        array = getattr(index, name)
        if array.ndim != 1 or len(array) != files:
            raise ValueError(f"{name} has {array.shape} entries for {files} files")
    if files == 0:
        raise ValueError("no files")
    if bool(np.any(index.counts < 0)) or bool(np.any(index.sizes < 0)):
        raise ValueError("negative sample counts or sizes")
    if not set(index.maps) <= set(index.keys):
        raise ValueError("byte maps do not match the keys")
    for key, key_maps in index.maps.items():
        check_maps(key, key_maps, index.counts)
    if index.layout == "members":
        check_members(index.members, index.counts)
    if index.layout == "groups":
        per_file, lengths = index.groups.per_file, index.groups.lengths
        if len(per_file) != files or int(per_file.sum()) != len(lengths):
            raise ValueError("group counts do not match the group lengths")
        if bool(np.any(lengths < 0)) or not np.array_equal(index.counts, per_file):
            raise ValueError("negative group lengths, or sample counts that are not group counts")
        check_members(index.members, per_file)

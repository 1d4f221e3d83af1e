"""The global sample index: which file and which local row a global index means.

Stored as a handful of numpy arrays (per-file counts, their cumulative ends,
size and mtime stamps) rather than a per-sample dict of tuples, so memory and
pickle size grow with the number of files, not of samples; DataLoader workers
then copy kilobytes, not the gigabyte a 10-million-entry dict costs.  A global
index is mapped back with ``searchsorted`` on the cumulative ends, as webdataset's
``wids`` does.
"""

from __future__ import annotations

import bisect
import json
import logging
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import h5py
import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from h5pool.byte_map import FileKeyMap, KeyMaps, KeySpec, map_dataset
from h5pool.errors import (
    CorpusError,
    FileChangedError,
    LayoutError,
    MissingKeyError,
    UnreadableFileError,
)
from h5pool.pool import HandlePool, PooledFile
from h5pool.remote import is_url
from h5pool.sources import natural_key

logger = logging.getLogger(__name__)

Layout = Literal["rows", "members"]
IntArray = npt.NDArray[np.int64]
INDEX_FORMAT_VERSION = 2


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

    files: list[str]
    counts: IntArray
    layout: Layout
    keys: tuple[str, ...]
    group: str
    sizes: IntArray
    mtimes: IntArray
    #: For the "members" layout: the member names of every file, concatenated in
    #: index order (natural sort within a file); empty for "rows".
    members: npt.NDArray[np.str_] = field(default_factory=lambda: np.empty(0, dtype=np.str_))
    #: For the "rows" layout: each key's byte maps (see h5pool.byte_map).
    maps: dict[str, KeyMaps] = field(default_factory=dict)
    ends: IntArray = field(init=False)
    starts: IntArray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.ends = np.cumsum(self.counts, dtype=np.int64)
        self.starts = self.ends - self.counts

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
        return file_number, position - int(self.starts[file_number])

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
        return file_numbers, positions - self.starts[file_numbers]

    def check_unchanged(self, entry: PooledFile, file_number: int) -> None:
        """Refuse a file replaced or rewritten since it was indexed (an ``fstat``).

        Readers call it once per opened handle, never per sample.
        """
        expected = (int(self.sizes[file_number]), int(self.mtimes[file_number]))
        found = entry.stamp()
        if found != expected:
            raise FileChangedError(
                f"{entry.path}: file changed since it was indexed "
                f"(size, mtime_ns) was {expected}, now {found}; rebuild the dataset",
                path=entry.path,
            )

    def member_name(self, file_number: int, local_index: int) -> str:
        return str(self.members[int(self.starts[file_number]) + local_index])

    def same_entries(self, other: CorpusIndex) -> bool:
        """True when ``other`` indexes the same files, unchanged, the same way."""
        return (
            self.files == other.files
            and (self.layout, self.keys, self.group) == (other.layout, other.keys, other.group)
            and np.array_equal(self.counts, other.counts)
            and np.array_equal(self.sizes, other.sizes)
            and np.array_equal(self.mtimes, other.mtimes)
            and np.array_equal(self.members, other.members)
        )

    # -- persistence -------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index as one ``.npz`` file (no pickle, safe to load)."""
        meta = {
            "version": INDEX_FORMAT_VERSION,
            "layout": self.layout,
            "keys": list(self.keys),
            "group": self.group,
            "specs": {key: [s.to_json() for s in m.specs] for key, m in self.maps.items()},
        }
        arrays: dict[str, npt.NDArray[Any]] = {}
        for number, key in enumerate(self.maps):
            key_maps = self.maps[key]
            arrays[f"map{number}_spec_ids"] = key_maps.spec_ids
            arrays[f"map{number}_positions"] = key_maps.positions
            arrays[f"map{number}_chunks"] = key_maps.chunks
        with open(path, "wb") as out:
            np.savez(
                out,
                meta=np.array(json.dumps(meta)),
                files=np.array(self.files, dtype=np.str_),
                counts=self.counts,
                sizes=self.sizes,
                mtimes=self.mtimes,
                members=self.members,
                **arrays,  # type: ignore[arg-type]
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorpusIndex:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            if meta.get("version") != INDEX_FORMAT_VERSION:
                raise ValueError(f"{path}: index format {meta.get('version')} not supported")
            maps = {
                key: KeyMaps(
                    [KeySpec.from_json(s) for s in specs],
                    saved[f"map{number}_spec_ids"],
                    saved[f"map{number}_positions"],
                    saved[f"map{number}_chunks"],
                )
                for number, (key, specs) in enumerate(meta.get("specs", {}).items())
            }
            return cls(
                files=[str(p) for p in saved["files"]],
                counts=saved["counts"],
                layout=meta["layout"],
                keys=tuple(meta["keys"]),
                group=meta["group"],
                sizes=saved["sizes"],
                mtimes=saved["mtimes"],
                members=saved["members"],
                maps=maps,
            )


@dataclass(frozen=True)
class FileEntry:
    """What scanning one file found."""

    count: int
    size: int
    mtime: int
    members: tuple[str, ...] = ()
    maps: tuple[FileKeyMap, ...] = ()


def member_names(entry: PooledFile, group: str) -> list[str]:
    """The datasets directly under ``group``, in natural sort order."""
    try:
        node = entry.file[group]
    except KeyError as exc:
        raise MissingKeyError(
            f"{entry.path}: no group {group!r} in the file", path=entry.path
        ) from exc
    if not isinstance(node, h5py.Group):
        raise MissingKeyError(f"{entry.path}: {group!r} is not a group", path=entry.path)
    names = [name for name, link in node.items() if isinstance(link, h5py.Dataset)]
    return sorted(names, key=natural_key)


def count_rows(entry: PooledFile, keys: Sequence[str]) -> int:
    """Length of axis 0 shared by every key, or a :class:`LayoutError`."""
    lengths: dict[str, int] = {}
    for key in keys:
        dataset = entry.dataset(key)
        if dataset.ndim == 0:
            raise LayoutError(
                f"{entry.path}: dataset {key!r} is a scalar; the 'rows' layout needs axis 0",
                path=entry.path,
            )
        lengths[key] = int(dataset.shape[0])
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
        raise LayoutError(
            f"{entry.path}: keys have unequal lengths on axis 0 ({described})", path=entry.path
        )
    return next(iter(lengths.values()))


def scan_file(
    pool: HandlePool, path: str, layout: Layout, keys: Sequence[str], group: str
) -> FileEntry:
    size, mtime = pool.stamp(path)
    entry = pool.acquire(path)
    try:
        if layout == "rows":
            count = count_rows(entry, keys)
            local = pool.plain_descriptor and not is_url(path)
            maps = tuple(_map_key(entry, key, local) for key in keys)
            return FileEntry(count, size, mtime, maps=maps)
        names = member_names(entry, group)
        return FileEntry(len(names), size, mtime, tuple(names))
    finally:
        pool.release(entry)


def _map_key(entry: PooledFile, key: str, local: bool) -> FileKeyMap:
    """The key's byte map; a dataset HDF5 cannot describe is an unreadable file."""
    dataset = entry.dataset(key)
    try:
        return map_dataset(dataset, entry.path, local=local)
    except Exception as exc:
        raise UnreadableFileError(
            f"{entry.path}: cannot read the storage of {key!r}: {exc}", path=entry.path
        ) from exc


def build_index(
    files: Sequence[str],
    *,
    layout: Layout,
    keys: Sequence[str],
    group: str,
    pool: HandlePool,
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool = False,
    reuse: CorpusIndex | None = None,
) -> tuple[CorpusIndex, list[tuple[str, str]]]:
    """Scan ``files`` through ``pool`` and return the index and the skipped files.

    ``reuse`` is an earlier index (e.g. loaded from a cache file): a file whose
    size and mtime are unchanged is taken from it without being opened.
    """
    reusable = _reusable_entries(reuse, layout, keys, group, pool)
    kept: list[str] = []
    entries: list[FileEntry] = []
    skipped: list[tuple[str, str]] = []
    rescanned = 0
    for path in tqdm(files, desc="indexing", unit="file", disable=not progress, leave=False):
        try:
            entry = reusable(path)
            if entry is None:
                rescanned += 1
                entry = scan_file(pool, path, layout, keys, group)
        except (CorpusError, OSError) as exc:
            if on_error == "raise":
                raise
            logger.warning("h5pool: skipping %s: %s", path, exc)
            skipped.append((path, str(exc)))
            continue
        kept.append(path)
        entries.append(entry)
    if reuse is not None and rescanned:
        logger.info("h5pool: index cache: rescanned %d new or changed files", rescanned)
    if not kept:
        raise CorpusError(f"none of the {len(files)} files could be indexed: {skipped[0][1]}")
    index = CorpusIndex(
        files=kept,
        counts=np.array([e.count for e in entries], dtype=np.int64),
        layout=layout,
        keys=tuple(keys),
        group=group,
        sizes=np.array([e.size for e in entries], dtype=np.int64),
        mtimes=np.array([e.mtime for e in entries], dtype=np.int64),
        members=np.array([m for e in entries for m in e.members], dtype=np.str_),
        maps={
            key: KeyMaps.from_files([e.maps[number] for e in entries])
            for number, key in enumerate(keys)
        }
        if layout == "rows"
        else {},
    )
    return index, skipped


def _reusable_entries(
    reuse: CorpusIndex | None, layout: Layout, keys: Sequence[str], group: str, pool: HandlePool
) -> Callable[[str], FileEntry | None]:
    """A lookup of the unchanged files of an earlier index built the same way."""
    if reuse is None or (reuse.layout, reuse.keys, reuse.group) != (layout, tuple(keys), group):
        return lambda path: None
    positions = {path: number for number, path in enumerate(reuse.files)}

    def lookup(path: str) -> FileEntry | None:
        number = positions.get(path)
        if number is None:
            return None
        try:
            stamp = pool.stamp(path)
        except (OSError, CorpusError):
            return None
        if stamp != (int(reuse.sizes[number]), int(reuse.mtimes[number])):
            logger.info("h5pool: index cache: %s changed since it was indexed", path)
            return None
        start, end = int(reuse.starts[number]), int(reuse.ends[number])
        members = tuple(str(m) for m in reuse.members[start:end]) if layout == "members" else ()
        count = int(reuse.counts[number])
        maps = tuple(reuse.maps[key].file_map(number, count) for key in reuse.maps)
        return FileEntry(count, stamp[0], stamp[1], members, maps)

    return lookup

"""Rows of files that need an HDF5 handle: a group of rows per file, through the pool.

Why apart from the engine: a file with a key that has no byte map is opened
through the pool's path-keyed handles (an ``h5py.File``, and its descriptor
for the keys that do have maps), one file at a time; its stamp is checked at
every visit.  This is the general, slower path, beside the file table's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.errors import CorpusError, FileChangedError, MissingFileError, ReadError
from h5pool.hdf5.byte_map import CHUNKED, CONTIGUOUS, KeyMaps
from h5pool.hdf5.chunks import ChunkGeometry, ChunkSource, DecodedChunks, read_chunked_rows
from h5pool.hdf5.readers import RowReader, scatter_runs
from h5pool.index.corpus_index import CorpusIndex
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.pooled_file import PooledFile

Group = tuple[int, list[int], list[int]]
ReadErrorOf = Callable[[str, int, int, Exception], ReadError]


def chunk_source(
    key_maps: KeyMaps,
    geometries: list[ChunkGeometry | None],
    cache: DecodedChunks,
    number: int,
    file_number: int,
    fd: int,
) -> ChunkSource:
    """The chunks of key ``number`` of one file, read through ``fd``."""
    geometry = geometries[int(key_maps.spec_ids[file_number])]
    assert geometry is not None
    table = key_maps.chunks[int(key_maps.positions[file_number]) :]  # the file's come first
    return ChunkSource(fd, table, geometry, cache, (file_number, number))


class HandleReads:
    """Reads rows of ``keys`` of files that need HDF5, a group per file."""

    def __init__(
        self,
        index: CorpusIndex,
        pool: HandlePool,
        maps: list[KeyMaps],
        kinds: list[list[str]],
        geometries: list[list[ChunkGeometry | None]],
        chunks: DecodedChunks,
        needs_hdf5: list[bool],
        read_error: ReadErrorOf,
    ) -> None:
        self.index, self.pool, self.keys = index, pool, index.keys
        self._maps, self._kinds, self._geometry = maps, kinds, geometries
        self.chunks = chunks
        self._needs_hdf5 = needs_hdf5
        self._read_error = read_error
        self._memo_key = ("h5pool.read.handle_reads", id(self))

    def read(
        self,
        file_numbers: IntArray,
        rows: IntArray,
        slots: IntArray,
        outputs: dict[str, npt.NDArray[Any]],
    ) -> None:
        """Rows of files with a key that has no byte map: a group per file."""
        order = np.lexsort((rows, file_numbers))
        sorted_files = file_numbers[order]
        bounds = [0, *(np.flatnonzero(np.diff(sorted_files)) + 1).tolist(), len(order)]
        sorted_rows = rows[order].tolist()
        positions = slots[order].tolist()
        file_list = sorted_files.tolist()
        views = self._byte_views(outputs)
        for begin, end in itertools.pairwise(bounds):
            group = (file_list[begin], sorted_rows[begin:end], positions[begin:end])
            self._read_group(group, outputs, views)

    def _acquire(self, file_number: int) -> PooledFile:
        path = self.index.files[file_number]
        try:
            return self.pool.acquire(path, raw=not self._needs_hdf5[file_number], resolved=True)
        except MissingFileError as exc:
            raise MissingFileError(
                f"{path}: file was indexed but no longer exists (deleted after indexing?)",
                path=path,
            ) from exc

    def _read_group(
        self, group: Group, outputs: dict[str, npt.NDArray[Any]], views: list[Any]
    ) -> None:
        file_number, rows, positions = group
        entry = self._acquire(file_number)
        path = entry.path
        try:
            self._check_stamp(entry, file_number)
            fd = entry.raw_fd()
            for number, key in enumerate(self.keys):
                key_maps = self._maps[number]
                spec_id = int(key_maps.spec_ids[file_number])
                kind = self._kinds[number][spec_id]
                try:
                    if fd is None:  # a remote object, or another driver: HDF5 reads it all
                        reader = self._hdf5_reader(entry, number, file_number)
                        reader.read_rows_into(rows, positions, outputs[key])
                    elif kind == CONTIGUOUS:
                        view = views[number]
                        if view is not None:  # None: rows of 0 bytes
                            base = int(key_maps.positions[file_number])
                            row_bytes = outputs[key].strides[0]
                            scatter_runs(fd, base, row_bytes, rows, positions, view)
                    elif kind == CHUNKED:
                        source = chunk_source(key_maps, self._geometry[number], self.chunks,
                                              number, file_number, fd)  # fmt: skip
                        read_chunked_rows(source, rows, positions, outputs[key])
                    else:
                        reader = self._hdf5_reader(entry, number, file_number)
                        reader.read_rows_into(rows, positions, outputs[key])
                except CorpusError:
                    raise
                except Exception as exc:
                    raise self._read_error(path, number, rows[0], exc) from exc
        finally:
            self.pool.release(entry)

    def _check_stamp(self, entry: PooledFile, file_number: int) -> None:
        """Refuse a file replaced, truncated or rewritten in place since it was indexed.

        One ``fstat`` per file visit (each file of a batch, each change of file
        between ``ds[i]`` calls), not per row: a handle that stays open in the
        pool would otherwise read a rewritten file without noticing.
        """
        self.index.check_unchanged(entry, file_number)
        if self._memo_key not in entry.memo:
            entry.memo[self._memo_key] = {}

    def _hdf5_reader(self, entry: PooledFile, number: int, file_number: int) -> RowReader:
        readers: dict[int, RowReader] = entry.memo.setdefault(self._memo_key, {})
        reader = readers.get(number)
        if reader is None:
            reader = RowReader(entry, self.keys[number])
            expected = int(self.index.counts[file_number])
            grown = self.index.appending and reader.length > expected  # SWMR: not a change
            if reader.length != expected and not grown:
                raise FileChangedError(
                    f"{entry.path}: {reader.key!r} has {reader.length} rows, "
                    f"the index has {expected}; rebuild the dataset",
                    path=entry.path,
                )
            readers[number] = reader
        return reader

    def _byte_views(self, outputs: dict[str, npt.NDArray[Any]]) -> list[Any]:
        return [
            out.data.cast("B") if out.nbytes and out.dtype.kind in "biufc" else None
            for out in outputs.values()
        ]

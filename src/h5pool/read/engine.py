"""The read engine: runs a batch plan over the files of an index, in threads.

A batch of (file, row) pairs is sorted into one *group* per file.  Each group
pins its file once and, key by key, reads through the key's byte map
(``pread``/``preadv`` of contiguous rows, or chunks decoded outside libhdf5)
or, where there is no map, through HDF5.  Every row lands straight in its
slot of one preallocated ``(B, ...)`` array per key, in request order.

Groups are independent, so a batch's groups are spread over a thread pool:
``pread`` and the decoders release the GIL.  A file visit through byte maps
costs an ``os.open`` instead of an HDF5 open; only files with a key that has
no map are opened through HDF5.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.errors import (
    CorpusError,
    FileChangedError,
    LayoutError,
    MissingFileError,
    ReadError,
)
from h5pool.hdf5.byte_map import CHUNKED, CONTIGUOUS, HDF5, KeyMaps
from h5pool.hdf5.chunks import (
    ChunkGeometry,
    ChunkSource,
    DecodedChunks,
    decode_raw_chunk,
    read_chunked_rows,
    read_raw_chunk,
)
from h5pool.hdf5.decode import decodable_reason
from h5pool.hdf5.readers import RowReader, scatter_runs
from h5pool.index.corpus_index import CorpusIndex
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.pooled_file import PooledFile
from h5pool.read.threads import (
    THREADED_READ_BYTES,
    BatchThreads,
    default_batch_threads,
    split_evenly,
)

logger = logging.getLogger(__name__)
Group = tuple[int, list[int], list[int]]


class ReadEngine:
    """Reads rows of ``keys`` of the files of ``index`` through ``pool``.

    Thread-safe.  One engine per dataset and process; it is never pickled.
    """

    def __init__(
        self,
        index: CorpusIndex,
        pool: HandlePool,
        *,
        num_threads: int | None = None,
        chunk_cache_bytes: int,
    ) -> None:
        self.index = index
        self.pool = pool
        self.keys = index.keys
        self.num_threads = num_threads if num_threads is not None else default_batch_threads()
        self.threads = BatchThreads(self.num_threads)
        self.chunks = DecodedChunks(chunk_cache_bytes)
        self._memo_key = ("h5pool.read.engine", id(self))
        self._last_single = -1  # the file of the last ds[i]: its stamp was just checked
        self._maps: list[KeyMaps] = [index.maps[key] for key in self.keys]
        # Per key and spec: numpy dtype, row shape, the effective kind, chunk geometry.
        self._dtypes = [[s.numpy_dtype for s in m.specs] for m in self._maps]
        plain = pool.plain_descriptor
        self._kinds = [[_effective_kind(s, plain) for s in m.specs] for m in self._maps]
        self._geometry = [
            [ChunkGeometry.of(s) if kind == CHUNKED else None for s, kind in zip(m.specs, kinds)]  # noqa: B905
            for m, kinds in zip(self._maps, self._kinds, strict=True)
        ]
        needs_hdf5 = np.zeros(len(index.files), dtype=bool)
        for key_maps, kinds in zip(self._maps, self._kinds, strict=True):
            hdf5_specs = np.array([kind == HDF5 for kind in kinds], dtype=bool)
            needs_hdf5 |= hdf5_specs[key_maps.spec_ids]
        self._needs_hdf5 = needs_hdf5.tolist()
        contiguous = np.ones(len(index.files), dtype=bool)
        for key_maps, kinds in zip(self._maps, self._kinds, strict=True):
            contiguous &= np.array([k == CONTIGUOUS for k in kinds], dtype=bool)[key_maps.spec_ids]
        self._all_contiguous = contiguous.tolist()
        self._threaded = any(CHUNKED in kinds for kinds in self._kinds)

    # -- public --------------------------------------------------------------------

    def read(self, file_numbers: IntArray, rows: IntArray) -> dict[str, npt.NDArray[Any]]:
        """Rows ``rows[i]`` of files ``file_numbers[i]``, stacked per key in request order."""
        count = len(file_numbers)
        order = np.lexsort((rows, file_numbers))
        sorted_files = file_numbers[order]
        bounds = [0, *(np.flatnonzero(np.diff(sorted_files)) + 1).tolist(), count]
        sorted_rows = rows[order].tolist()
        positions = order.tolist()
        file_list = sorted_files.tolist()
        groups: list[Group] = [
            (file_list[b], sorted_rows[b:e], positions[b:e]) for b, e in itertools.pairwise(bounds)
        ]
        outputs = self.allocate([g[0] for g in groups], count)
        self._run(groups, outputs)
        return outputs

    def read_one(self, file_number: int, row: int) -> dict[str, npt.NDArray[Any]]:
        """One row of every key, each an array of the row's shape.

        Files whose keys are all contiguous take a short path: one ``preadv``
        per key straight into the row's array, nothing else.
        """
        if self._all_contiguous[file_number]:
            return self._read_one_contiguous(file_number, row)
        outputs = self.allocate([file_number], 1)
        self._read_group((file_number, [row], [0]), outputs, self._byte_views(outputs), None)
        return {key: out[0, ...] for key, out in outputs.items()}

    def _read_one_contiguous(self, file_number: int, row: int) -> dict[str, npt.NDArray[Any]]:
        entry = self._acquire(file_number)
        try:
            if file_number != self._last_single or self._memo_key not in entry.memo:
                self._check_stamp(entry, file_number)
                self._last_single = file_number
            fd = entry.raw_fd()
            assert fd is not None
            outputs: dict[str, npt.NDArray[Any]] = {}
            for number, key in enumerate(self.keys):
                key_maps = self._maps[number]
                spec_id = int(key_maps.spec_ids[file_number])
                out = np.empty(key_maps.specs[spec_id].row_shape, self._dtypes[number][spec_id])
                offset = int(key_maps.positions[file_number]) + row * out.nbytes
                try:
                    got = os.preadv(fd, [out.data], offset) if out.nbytes else 0
                    if got != out.nbytes:
                        raise OSError(f"short read: got {got} of {out.nbytes} bytes")
                except OSError as exc:
                    raise self._read_error(entry.path, number, row, exc) from exc
                outputs[key] = out
            return outputs
        finally:
            self.pool.release(entry)

    def kind(self, key: str, file_number: int) -> str:
        """How ``key`` of file ``file_number`` is read: contiguous, chunked or hdf5."""
        return self.kind_of(self.keys.index(key), file_number)

    def close(self) -> None:
        self.threads.close()

    # -- planning ------------------------------------------------------------------

    def allocate(self, file_numbers: Sequence[int], count: int) -> dict[str, npt.NDArray[Any]]:
        """One empty ``(count, ...)`` array per key, shaped as the files' specs say."""
        outputs: dict[str, npt.NDArray[Any]] = {}
        for number, key in enumerate(self.keys):
            key_maps = self._maps[number]
            ids = key_maps.spec_ids[file_numbers] if len(file_numbers) > 1 else None
            first = int(key_maps.spec_ids[file_numbers[0]])
            if ids is not None and (ids != first).any():
                self._check_agree(number, file_numbers, ids)
            spec = key_maps.specs[first]
            outputs[key] = np.empty((count, *spec.row_shape), dtype=self._dtypes[number][first])
        return outputs

    def _check_agree(self, number: int, file_numbers: Sequence[int], ids: Any) -> None:
        key_maps = self._maps[number]
        seen: dict[tuple[Any, ...], int] = {}
        for file_number, spec_id in zip(file_numbers, ids.tolist(), strict=True):
            spec = key_maps.specs[spec_id]
            signature = (self._dtypes[number][spec_id], spec.row_shape)
            other = seen.setdefault(signature, file_number)
            if len(seen) > 1:
                (first_sig, first_file), *_ = seen.items()
                files = self.index.files
                raise LayoutError(
                    f"{self.keys[number]!r} differs between files of one batch: "
                    f"{files[first_file]} has {first_sig[0]} rows of shape {first_sig[1]}, "
                    f"{files[other]} has {signature[0]} rows of shape {signature[1]}; "
                    "read such batches sample by sample",
                    path=files[other],
                )

    # -- running -------------------------------------------------------------------

    def _run(self, groups: list[Group], outputs: dict[str, npt.NDArray[Any]]) -> None:
        """Read every group into ``outputs``; threads where they pay.

        With chunked keys, the missing chunks of the whole batch are read first,
        decoded in threads, then placed: decoding is the work that releases the
        GIL.  Large contiguous batches spread whole groups over the threads.
        """
        views = self._byte_views(outputs)
        workers = min(self.num_threads, len(groups))
        prefetched: dict[Any, npt.NDArray[Any]] | None = None
        verified: set[int] = set()
        if workers >= 2 and self._threaded:
            prefetched = self._prefetch_chunks(groups, workers, verified)
        elif workers >= 2 and sum(out.nbytes for out in outputs.values()) >= THREADED_READ_BYTES:
            self.threads.run(
                lambda share: self._read_groups(share, outputs, views, None, verified),
                split_evenly(groups, workers, [len(g[1]) for g in groups]),
            )
            return
        self._read_groups(groups, outputs, views, prefetched, verified)

    def _prefetch_chunks(
        self, groups: list[Group], workers: int, verified: set[int]
    ) -> dict[Any, npt.NDArray[Any]]:
        """Read the stored bytes of every chunk the batch needs and the cache lacks,
        then decode them in ``workers`` threads.  Files whose stamp it checked go
        into ``verified``, so that placing their rows does not check again."""
        jobs: list[tuple[Any, Any, ChunkGeometry, str, int, int]] = []
        for file_number, rows, _ in groups:
            chunked = [n for n in range(len(self.keys)) if self.kind_of(n, file_number) == CHUNKED]
            if not chunked:
                continue
            entry = self._acquire(file_number)
            path = entry.path
            try:
                self._check_stamp(entry, file_number)
                verified.add(file_number)
                fd = entry.raw_fd()
                assert fd is not None
                for number in chunked:
                    source = self._source(number, file_number, fd, None)
                    for chunk_number, row in source.missing(rows):
                        try:
                            stored = read_raw_chunk(fd, source.table[chunk_number])
                        except Exception as exc:
                            raise self._read_error(path, number, row, exc) from exc
                        key = (*source.cache_key, chunk_number)
                        jobs.append((key, stored, source.geometry, path, number, row))
            finally:
                self.pool.release(entry)
        decoded: dict[Any, npt.NDArray[Any]] = {}

        def decode(share: list[tuple[Any, Any, ChunkGeometry, str, int, int]]) -> None:
            for key, stored, geometry, path, number, row in share:
                try:
                    decoded[key] = decode_raw_chunk(stored, geometry, threaded=True)
                except Exception as exc:
                    raise self._read_error(path, number, row, exc) from exc

        self.threads.run(decode, split_evenly(jobs, min(workers, len(jobs)), None))
        for key, chunk in decoded.items():
            self.chunks.put(key, chunk)
        return decoded

    def _read_groups(
        self,
        groups: list[Group],
        outputs: dict[str, npt.NDArray[Any]],
        views: list[Any],
        prefetched: dict[Any, npt.NDArray[Any]] | None,
        verified: set[int],
    ) -> None:
        for group in groups:
            self._read_group(group, outputs, views, prefetched, group[0] in verified)

    def _acquire(self, file_number: int) -> PooledFile:
        path = self.index.files[file_number]
        try:
            return self.pool.acquire(path, raw=not self._needs_hdf5[file_number], resolved=True)
        except MissingFileError as exc:
            raise MissingFileError(
                f"{path}: file was indexed but no longer exists (deleted after indexing?)",
                path=path,
            ) from exc

    def _read_error(self, path: str, number: int, row: int, exc: Exception) -> ReadError:
        row = getattr(exc, "row", row)
        key = self.keys[number]
        error = ReadError(f"{path}: reading row {row} of {key!r} failed: {exc}", path=path)
        error.row = row
        return error

    def kind_of(self, number: int, file_number: int) -> str:
        return self._kinds[number][int(self._maps[number].spec_ids[file_number])]

    def _read_group(
        self,
        group: Group,
        outputs: dict[str, npt.NDArray[Any]],
        views: list[Any],
        prefetched: dict[Any, npt.NDArray[Any]] | None,
        verified: bool = False,
    ) -> None:
        file_number, rows, positions = group
        entry = self._acquire(file_number)
        path = entry.path
        try:
            if not (verified and self._memo_key in entry.memo):  # checked in this batch
                self._check_stamp(entry, file_number)
            fd = entry.raw_fd()
            for number, key in enumerate(self.keys):
                key_maps = self._maps[number]
                spec_id = int(key_maps.spec_ids[file_number])
                kind = self._kinds[number][spec_id]
                try:
                    if kind == CONTIGUOUS:
                        if fd is None:
                            raise OSError("no plain descriptor to read a byte map through")
                        view = views[number]
                        if view is not None:  # None: rows of 0 bytes
                            base = int(key_maps.positions[file_number])
                            row_bytes = outputs[key].strides[0]
                            scatter_runs(fd, base, row_bytes, rows, positions, view)
                    elif kind == CHUNKED:
                        if fd is None:
                            raise OSError("no plain descriptor to read a byte map through")
                        source = self._source(number, file_number, fd, prefetched)
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

    def _source(
        self,
        number: int,
        file_number: int,
        fd: int,
        prefetched: dict[Any, npt.NDArray[Any]] | None,
    ) -> ChunkSource:
        key_maps = self._maps[number]
        geometry = self._geometry[number][int(key_maps.spec_ids[file_number])]
        assert geometry is not None
        table = key_maps.chunks[int(key_maps.positions[file_number]) :]  # the file's come first
        return ChunkSource(fd, table, geometry, self.chunks, (file_number, number), prefetched)

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


def _effective_kind(spec: Any, plain_descriptor: bool) -> str:
    """The spec's kind, demoted to HDF5 when this process lacks one of its decoders,
    or when the pool's driver gives no plain descriptor (an index cached under
    another driver must not make a reader pread nothing)."""
    if spec.kind != HDF5 and not plain_descriptor:
        return HDF5
    if spec.kind == CHUNKED and decodable_reason(spec.filters):
        return HDF5
    return str(spec.kind)

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
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool.byte_map import CHUNKED, CONTIGUOUS, HDF5, KeyMaps
from h5pool.chunks import ChunkGeometry, ChunkSource, DecodedChunks, read_chunked_rows
from h5pool.decode import decodable_reason
from h5pool.errors import (
    CorpusError,
    FileChangedError,
    LayoutError,
    MissingFileError,
    ReadError,
)
from h5pool.index import CorpusIndex
from h5pool.pool import HandlePool, PooledFile
from h5pool.readers import RowReader, scatter_runs

logger = logging.getLogger(__name__)
IntArray = npt.NDArray[np.int64]
Group = tuple[int, list[int], list[int]]

#: Below this many bytes a batch of contiguous rows is read in the calling
#: thread: for small rows, handing work to threads costs more than it saves.
THREADED_READ_BYTES = 1 << 20


def default_num_threads() -> int:
    """1 inside a DataLoader worker (the workers are the parallelism), else the
    usable cores, at most 8."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is not None:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


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
        self.num_threads = num_threads if num_threads is not None else default_num_threads()
        self.chunks = DecodedChunks(chunk_cache_bytes)
        self._pid = os.getpid()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._memo_key = ("h5pool.engine", id(self))
        self._maps: list[KeyMaps] = [index.maps[key] for key in self.keys]
        # Per key and spec: numpy dtype, row shape, the effective kind, chunk geometry.
        self._dtypes = [[s.numpy_dtype for s in m.specs] for m in self._maps]
        self._kinds = [[_effective_kind(s) for s in m.specs] for m in self._maps]
        self._geometry = [
            [ChunkGeometry.of(s) if kind == CHUNKED else None for s, kind in zip(m.specs, kinds)]  # noqa: B905
            for m, kinds in zip(self._maps, self._kinds, strict=True)
        ]
        needs_hdf5 = np.zeros(len(index.files), dtype=bool)
        for key_maps, kinds in zip(self._maps, self._kinds, strict=True):
            hdf5_specs = np.array([kind == HDF5 for kind in kinds], dtype=bool)
            needs_hdf5 |= hdf5_specs[key_maps.spec_ids]
        self._needs_hdf5 = needs_hdf5.tolist()
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
        outputs = self._allocate([g[0] for g in groups], count)
        self._run(groups, outputs)
        return outputs

    def read_one(self, file_number: int, row: int) -> dict[str, npt.NDArray[Any]]:
        """One row of every key, each as an array of shape ``(1, ...)``."""
        outputs = self._allocate([file_number], 1)
        self._read_group((file_number, [row], [0]), outputs, self._byte_views(outputs))
        return outputs

    def kind(self, key: str, file_number: int) -> str:
        """How ``key`` of file ``file_number`` is read: contiguous, chunked or hdf5."""
        number = self.keys.index(key)
        return self._kinds[number][int(self._maps[number].spec_ids[file_number])]

    def close(self) -> None:
        with self._executor_lock:
            if self._executor is not None and self._pid == os.getpid():
                self._executor.shutdown(wait=True)
            self._executor = None

    # -- planning ------------------------------------------------------------------

    def _allocate(self, file_numbers: Sequence[int], count: int) -> dict[str, npt.NDArray[Any]]:
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
        views = self._byte_views(outputs)
        batch_bytes = sum(out.nbytes for out in outputs.values())
        workers = min(self.num_threads, len(groups))
        if workers < 2 or not (self._threaded or batch_bytes >= THREADED_READ_BYTES):
            for group in groups:
                self._read_group(group, outputs, views)
            return
        shares = _split(groups, workers)
        executor = self._executor_for_process()
        futures: list[Future[None]] = [
            executor.submit(self._read_groups, share, outputs, views) for share in shares[1:]
        ]
        error: BaseException | None = None
        try:
            self._read_groups(shares[0], outputs, views)
        except BaseException as exc:
            error = exc
        for future in futures:  # always wait: no thread may write into a dead batch
            failure = future.exception()
            if failure is not None and error is None:
                error = failure
        if error is not None:
            raise error

    def _read_groups(
        self, groups: list[Group], outputs: dict[str, npt.NDArray[Any]], views: list[Any]
    ) -> None:
        for group in groups:
            self._read_group(group, outputs, views)

    def _read_group(
        self, group: Group, outputs: dict[str, npt.NDArray[Any]], views: list[Any]
    ) -> None:
        file_number, rows, positions = group
        path = self.index.files[file_number]
        try:
            entry = self.pool.acquire(path, raw=not self._needs_hdf5[file_number])
        except MissingFileError as exc:
            raise MissingFileError(
                f"{path}: file was indexed but no longer exists (deleted after indexing?)",
                path=path,
            ) from exc
        try:
            self._check_stamp(entry, file_number)
            fd = entry.raw_fd()
            for number, key in enumerate(self.keys):
                key_maps = self._maps[number]
                spec_id = int(key_maps.spec_ids[file_number])
                kind = self._kinds[number][spec_id]
                try:
                    if kind == CONTIGUOUS:
                        row_bytes = outputs[key][0].nbytes if len(outputs[key]) else 0
                        base = int(key_maps.positions[file_number])
                        if row_bytes and fd is not None:
                            scatter_runs(fd, base, row_bytes, rows, positions, views[number])
                    elif kind == CHUNKED:
                        assert fd is not None
                        self._read_chunked(
                            number, file_number, spec_id, fd, rows, positions, outputs[key]
                        )
                    else:
                        reader = self._hdf5_reader(entry, number, file_number)
                        reader.read_rows_into(rows, positions, outputs[key])
                except CorpusError:
                    raise
                except Exception as exc:
                    row = getattr(exc, "row", rows[0])
                    error = ReadError(
                        f"{path}: reading row {row} of {key!r} failed: {exc}", path=path
                    )
                    error.row = row
                    raise error from exc
        finally:
            self.pool.release(entry)

    def _read_chunked(
        self,
        number: int,
        file_number: int,
        spec_id: int,
        fd: int,
        rows: list[int],
        positions: list[int],
        out: npt.NDArray[Any],
    ) -> None:
        key_maps = self._maps[number]
        geometry = self._geometry[number][spec_id]
        assert geometry is not None
        start = int(key_maps.positions[file_number])
        table = key_maps.chunks[start:]  # a view: the file's chunks come first
        source = ChunkSource(fd, table, geometry, self.chunks, (file_number, number))
        read_chunked_rows(source, rows, positions, out)

    def _check_stamp(self, entry: PooledFile, file_number: int) -> None:
        """Refuse a file replaced or rewritten since it was indexed; once per open."""
        if self._memo_key in entry.memo:
            return
        expected = (int(self.index.sizes[file_number]), int(self.index.mtimes[file_number]))
        found = entry.stamp()
        if found != expected:
            raise FileChangedError(
                f"{entry.path}: file changed since it was indexed "
                f"(size, mtime_ns) was {expected}, now {found}; rebuild the dataset",
                path=entry.path,
            )
        entry.memo[self._memo_key] = {}

    def _hdf5_reader(self, entry: PooledFile, number: int, file_number: int) -> RowReader:
        readers: dict[int, RowReader] = entry.memo[self._memo_key]
        reader = readers.get(number)
        if reader is None:
            reader = RowReader(entry, self.keys[number])
            expected = int(self.index.counts[file_number])
            if reader.length != expected:
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

    def _executor_for_process(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._executor = ThreadPoolExecutor(
                    self.num_threads - 1 or 1, thread_name_prefix="h5pool-read"
                )
            return self._executor


def _effective_kind(spec: Any) -> str:
    """The spec's kind, demoted to HDF5 when this process lacks one of its decoders."""
    if spec.kind == CHUNKED and decodable_reason(spec.filters):
        return HDF5
    return str(spec.kind)


def _split(groups: list[Group], shares: int) -> list[list[Group]]:
    """Consecutive runs of groups with about equal row counts, one per thread."""
    sizes = np.cumsum([len(g[1]) for g in groups])
    cuts = np.searchsorted(sizes, np.arange(1, shares) * sizes[-1] / shares, side="left")
    bounds = [0, *sorted(set((cuts + 1).tolist())), len(groups)]
    return [groups[b:e] for b, e in itertools.pairwise(bounds) if b < e]

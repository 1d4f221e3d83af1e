"""The read engine: runs a batch's plan over the files of an index.

Files whose keys all have byte maps are reached through the pool's
:class:`~h5pool.pool.file_table.FileTable`, by file number: a batch pins its
distinct files in one array operation and each key's rows become a plan of
arrays (:mod:`h5pool.read.plan`), run by the compiled kernel (contiguous rows)
or by decoding each needed chunk once, in threads split by stored bytes.
Files with a key that has no byte map go through the pool's HDF5 handles, one
group of rows per file.  Every row lands straight in its slot of one
preallocated ``(B, ...)`` array per key, in request order.

``ds[i]`` takes the shortest path: one table lookup, then one ``pread`` per key
into the row's array.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.errors import (
    CorpusError,
    LayoutError,
    ReadError,
)
from h5pool.hdf5.byte_map import KeyMaps
from h5pool.hdf5.chunks import ChunkSource, DecodedChunks, read_chunked_rows
from h5pool.index.corpus_index import CorpusIndex
from h5pool.pool.file_table import DEFAULT_STALE_AFTER, FileTable
from h5pool.pool.handle_pool import HandlePool
from h5pool.read.handle_reads import HandleReads, chunk_source
from h5pool.read.key_kinds import (
    CONTIGUOUS_ROWS,
    PARTIAL_CHUNKS,
    WHOLE_CHUNKS,
    KeyKinds,
    remote_files,
)
from h5pool.read.plan import KEY_SLOTS, Rows, read_contiguous, read_whole_chunks
from h5pool.read.remote_blocks import DEFAULT_BLOCK_BYTES, BlockCache, RemoteReads
from h5pool.read.remote_plan import RemoteRows, prefetch_by_blocks, read_by_blocks
from h5pool.read.threads import BatchThreads, default_batch_threads

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
        stale_after: float = DEFAULT_STALE_AFTER,
        remote: RemoteReads | None = None,
    ) -> None:
        self.index = index
        self.pool = pool
        self.keys = index.keys
        self.num_threads = num_threads if num_threads is not None else default_batch_threads()
        self.threads = BatchThreads(self.num_threads)
        self.chunks = DecodedChunks(chunk_cache_bytes)
        if len(self.keys) >= KEY_SLOTS:
            raise ValueError(f"at most {KEY_SLOTS - 1} keys, not {len(self.keys)}")
        self._maps: list[KeyMaps] = [index.maps[key] for key in self.keys]
        kinds = self.key_kinds = KeyKinds(self._maps, pool.plain_descriptor)
        self._dtypes, self._kinds, self._geometry = kinds.dtypes, kinds.kinds, kinds.geometry
        remote_mask = remote_files(index.files)
        # Remote files take byte maps of contiguous keys and of chunks of whole rows.
        partial = np.zeros(len(index.files), dtype=bool)
        for codes in kinds.file_codes:
            partial |= codes == PARTIAL_CHUNKS
        self.remote = remote if remote is not None else RemoteReads()
        through_hdf5 = remote_mask & (partial | (self.remote.block_bytes is None))
        needs_hdf5 = kinds.needs_hdf5 | through_hdf5
        self._needs_hdf5 = needs_hdf5.tolist()
        #: The files read through byte maps only, by number, through the file table.
        self.table = (
            FileTable(pool, index.files, self._stamp_of, stale_after=stale_after)
            if pool.plain_descriptor
            else None
        )
        local = ~needs_hdf5 & ~remote_mask
        self._by_table = local if self.table is not None else np.zeros_like(local)
        #: Remote files read through their byte maps, as blocks (h5pool.read.remote_blocks).
        self._by_blocks = ~needs_hdf5 & remote_mask
        #: Some files are remote objects read as blocks (so worth fetching ahead).
        self.reads_blocks = bool(self._by_blocks.any())
        self._stale_after = stale_after
        self._blocks: BlockCache | None = None
        self._blocks_lock = threading.Lock()
        #: URLs of the files read as blocks, by number (made with the block cache).
        self._remote_urls: dict[int, str] = {}
        #: Files that need HDF5, through the pool's handles.
        self.handles = HandleReads(
            index,
            pool,
            self._maps,
            self._kinds,
            self._geometry,
            self.chunks,
            self._needs_hdf5,
            self._read_error,
        )
        self._all_contiguous = (kinds.contiguous & self._by_table).tolist()
        # ds[i]'s lookups per key: the key, then spec numbers, offsets, row shapes,
        # dtypes and row sizes in bytes.
        self._single = [
            (key, (*lookups, [int(np.prod(shape, dtype=np.int64)) * d.itemsize
                              for shape, d in zip(lookups[2], lookups[3], strict=True)]))
            for key, lookups in zip(self.keys, kinds.single, strict=True)
        ]  # fmt: skip
        #: Per file: its rows are read by the shortest path and are tensors as read.
        self.tensor_rows = (kinds.contiguous & self._by_table & kinds.tensors).tolist()

    # -- public --------------------------------------------------------------------

    def read(self, file_numbers: IntArray, rows: IntArray) -> dict[str, npt.NDArray[Any]]:
        """Rows ``rows[i]`` of files ``file_numbers[i]``, stacked per key in request order."""
        files = np.unique(file_numbers)
        outputs = self.allocate(files, len(file_numbers))
        by_table = self._by_table[file_numbers]
        if by_table.all():
            self._read_by_table(files, Rows(file_numbers, rows, file_numbers, None), outputs)
            return outputs
        picked = np.flatnonzero(by_table)
        if len(picked):
            plan = Rows(file_numbers[picked], rows[picked], file_numbers[picked], picked)
            self._read_by_table(np.unique(plan.files), plan, outputs)
        by_blocks = self._by_blocks[file_numbers]
        fetched = np.flatnonzero(by_blocks)
        if len(fetched):
            self._read_by_blocks(file_numbers[fetched], rows[fetched], fetched, outputs)
        rest = np.flatnonzero(~by_table & ~by_blocks)
        if len(rest):
            self.handles.read(file_numbers[rest], rows[rest], rest, outputs)
        return outputs

    def read_one(self, file_number: int, row: int) -> dict[str, npt.NDArray[Any]]:
        """One row of every key, each an array of the row's shape.

        Files whose keys are all contiguous take the shortest path: one table
        lookup, then one ``pread`` per key straight into the row's array.
        """
        if not self._all_contiguous[file_number]:
            one = np.array([file_number], dtype=np.int64)
            batch = self.read(one, np.array([row], dtype=np.int64))
            return {key: out[0, ...] for key, out in batch.items()}
        table = self.table
        assert table is not None
        fd = table.pin_one(file_number)
        outputs: dict[str, npt.NDArray[Any]] = {}
        try:
            for key, (spec_ids, positions, shapes, dtypes, sizes) in self._single:
                spec_id = spec_ids[file_number] if spec_ids is not None else 0
                size = sizes[spec_id]
                out = np.empty(shapes[spec_id], dtypes[spec_id])
                if size and os.preadv(fd, [out.data], positions[file_number] + row * size) != size:
                    raise OSError(f"short read of {size} bytes (file truncated or replaced?)")
                outputs[key] = out
            return outputs
        except OSError as exc:
            path = self.index.files[file_number]
            raise self._read_error(path, len(outputs), row, exc) from exc
        finally:
            table.unpin_one(file_number)

    def kind(self, key: str, file_number: int) -> str:
        """How ``key`` of file ``file_number`` is read: contiguous, chunked or hdf5."""
        return self.kind_of(self.keys.index(key), file_number)

    def close(self) -> None:
        """Stop the helper threads and close the file table's descriptors."""
        self.threads.close()
        if self.table is not None:
            self.table.close()
        if self._blocks is not None:
            self._blocks.ranges.close()

    # -- planning ------------------------------------------------------------------

    def allocate(
        self, file_numbers: Sequence[int] | IntArray, count: int
    ) -> dict[str, npt.NDArray[Any]]:
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

    def _check_agree(self, number: int, file_numbers: Sequence[int] | IntArray, ids: Any) -> None:
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

    # -- running: through the file table -------------------------------------------

    def _read_by_table(
        self, files: IntArray, plan: Rows, outputs: dict[str, npt.NDArray[Any]]
    ) -> None:
        """The plan's rows of every key; ``plan.fds`` holds file numbers on entry.

        A batch pins its distinct files together, as many as fit in ``max_open``
        beside those other readers have pinned; the rest in the next round.
        """
        table = self.table
        assert table is not None
        slots = plan.slots
        remaining = files
        while len(remaining):
            fds = table.pin(remaining, within=self.pool.max_open)
            some, remaining = remaining[: len(fds)], remaining[len(fds) :]
            try:
                if len(some) == len(files):
                    part = Rows(plan.files, plan.rows, table.fds[plan.files], slots)
                else:
                    chosen = np.flatnonzero(np.isin(plan.files, some))
                    where = chosen if slots is None else slots[chosen]
                    files_of = plan.files[chosen]
                    part = Rows(files_of, plan.rows[chosen], table.fds[files_of], where)
                self._read_keys(part, outputs)
            finally:
                table.unpin(some)

    def _read_keys(self, plan: Rows, outputs: dict[str, npt.NDArray[Any]]) -> None:
        for number, key in enumerate(self.keys):
            codes = self.key_kinds.file_codes[number][plan.files]
            first = int(codes[0])
            if (codes == first).all():
                self._read_key(number, first, plan, outputs[key])
                continue
            for code in np.unique(codes).tolist():
                chosen = np.flatnonzero(codes == code)
                slots = chosen if plan.slots is None else plan.slots[chosen]
                part = Rows(plan.files[chosen], plan.rows[chosen], plan.fds[chosen], slots)
                self._read_key(number, code, part, outputs[key])

    def _read_key(self, number: int, code: int, plan: Rows, out: npt.NDArray[Any]) -> None:
        def on_error(position: int, exc: Exception) -> Exception:
            if isinstance(exc, CorpusError):
                return exc
            path = self.index.files[int(plan.files[position])]
            return self._read_error(path, number, int(plan.rows[position]), exc)

        maps = self._maps[number]
        if code == CONTIGUOUS_ROWS:
            read_contiguous(plan, maps, self.index.sizes, out, on_error)
        elif code == WHOLE_CHUNKS:
            geometries, axes = self._geometry[number], self.key_kinds.first_axes[number]
            read_whole_chunks(
                plan,
                number,
                maps,
                geometries,
                axes,
                self.chunks,
                self.threads,
                self.index.sizes,
                out,
                on_error,
            )
        else:
            self._read_partial_chunks(number, plan, out)

    def _read_partial_chunks(self, number: int, plan: Rows, out: npt.NDArray[Any]) -> None:
        """The general chunked case (a row cut over several chunks): file by file."""
        order = np.lexsort((plan.rows, plan.files))
        slots = order if plan.slots is None else plan.slots[order]
        files, rows, fds = plan.files[order], plan.rows[order], plan.fds[order]
        bounds = [0, *(np.flatnonzero(np.diff(files)) + 1).tolist(), len(order)]
        for begin, end in itertools.pairwise(bounds):
            file_number = int(files[begin])
            source = self._source(number, file_number, int(fds[begin]))
            try:
                read_chunked_rows(source, rows[begin:end].tolist(), slots[begin:end].tolist(), out)
            except Exception as exc:
                path = self.index.files[file_number]
                raise self._read_error(path, number, int(rows[begin]), exc) from exc

    def _read_by_blocks(
        self,
        file_numbers: IntArray,
        rows: IntArray,
        slots: IntArray,
        outputs: dict[str, npt.NDArray[Any]],
    ) -> None:
        """Rows of remote files through their byte maps: one concurrent fetch of
        the blocks every key needs, then rows cut out and chunks decoded."""
        cache = self._block_cache()
        urls = self._remote_urls

        def on_error(number: int, position: int, exc: Exception) -> Exception:
            if isinstance(exc, CorpusError):
                return exc
            path = urls[int(file_numbers[position])]
            return self._read_error(path, number, int(rows[position]), exc)

        columns = [outputs[key] for key in self.keys]
        wanted = RemoteRows(urls, file_numbers, rows, self._maps, self.key_kinds, self.chunks,
                            columns)  # fmt: skip
        read_by_blocks(cache, wanted, slots, on_error)

    def prefetch(self, file_numbers: IntArray, rows: IntArray) -> int:
        """Send the block requests these rows of remote objects will need, without
        waiting (other files: nothing to do).  Returns the blocks asked for."""
        remote = self._by_blocks[file_numbers]
        if not remote.any():
            return 0
        file_numbers, rows = file_numbers[remote], rows[remote]
        cache = self._block_cache()
        rows_of_each_key = list(self.allocate(np.unique(file_numbers), 0).values())
        wanted = RemoteRows(self._remote_urls, file_numbers, rows, self._maps, self.key_kinds,
                            self.chunks, rows_of_each_key)  # fmt: skip
        return prefetch_by_blocks(cache, wanted)

    def _block_cache(self) -> BlockCache:
        """The process's block cache, made on first use with the stamps the index
        recorded (and when it read them); the URLs of the files read as blocks are
        decoded once then, not at every batch."""
        with self._blocks_lock:
            if self._blocks is None:
                numbers = np.flatnonzero(self._by_blocks).tolist()
                self._remote_urls = {f: self.index.files[f] for f in numbers}
                urls = list(self._remote_urls.values())
                stamps = {url: self._stamp_of(f) for f, url in self._remote_urls.items()}
                verified = self.index.verified_at
                self._blocks = BlockCache(
                    self.pool.filesystems,
                    stamps.__getitem__,
                    block_bytes=self.remote.block_bytes or DEFAULT_BLOCK_BYTES,
                    max_requests_in_flight=self.remote.max_requests_in_flight,
                    max_bytes=self.remote.cache_bytes,
                    stale_after=self._stale_after,
                    verified=dict.fromkeys(urls, verified) if verified is not None else None,
                )
            return self._blocks

    @property
    def remote_blocks(self) -> BlockCache | None:
        """The block cache of remote objects (``None`` until one is read)."""
        return self._blocks

    def _stamp_of(self, file_number: int) -> tuple[int, int]:
        return int(self.index.sizes[file_number]), int(self.index.mtimes[file_number])

    def _read_error(self, path: str, number: int, row: int, exc: Exception) -> ReadError:
        row = getattr(exc, "row", row)
        key = self.keys[number]
        error = ReadError(f"{path}: reading row {row} of {key!r} failed: {exc}", path=path)
        error.row = row
        return error

    def kind_of(self, number: int, file_number: int) -> str:
        return self._kinds[number][int(self._maps[number].spec_ids[file_number])]

    def _source(self, number: int, file_number: int, fd: int) -> ChunkSource:
        return chunk_source(self._maps[number], self._geometry[number], self.chunks, number,
                            file_number, fd)  # fmt: skip

"""Reading rows of chunked datasets through their byte maps, with a decoded-chunk cache.

Why a cache: in block order the rows of one chunk arrive spread over several
batches; without it every batch would inflate the same chunk again.  Each
chunk is decoded at most once per batch (rows are grouped by chunk first), and
the cache keeps decoded chunks across batches up to a byte budget per process.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool.hdf5.byte_map import KeySpec
from h5pool.hdf5.decode import decode_chunk

#: Default budget of the decoded-chunk cache, per process and dataset: 64 MiB
#: holds 2,048 chunks of 32 KiB, several blocks' worth in block order.
DEFAULT_CHUNK_CACHE_BYTES = 64 << 20


class ChunkReadError(ValueError):
    """A chunk that could not be read or decoded; ``row`` is the first row that needs it."""

    def __init__(self, message: str, *, row: int) -> None:
        super().__init__(message)
        self.row = row


@dataclass(frozen=True)
class ChunkGeometry:
    """What decoding and placing a spec's chunks needs, worked out once per spec.

    ``inner_grid`` is the number of chunks along each axis after the first:
    it depends on the row shape only, so it is the same for every file.
    ``whole_rows`` means one chunk holds whole rows (the common case), which
    lets a row be copied with one assignment.
    """

    spec: KeySpec
    dtype: np.dtype[Any]
    chunk_shape: tuple[int, ...]
    chunk_bytes: int
    inner_grid: tuple[int, ...]
    whole_rows: bool
    fill_chunk: npt.NDArray[Any] = field(repr=False)

    @classmethod
    def of(cls, spec: KeySpec) -> ChunkGeometry:
        dtype = spec.numpy_dtype
        fill = np.frombuffer(bytes.fromhex(spec.fill), dtype=dtype)[0]
        chunk = np.full(spec.chunk_shape, fill, dtype=dtype)
        chunk.flags.writeable = False
        inner = tuple(-(-n // c) for n, c in zip(spec.row_shape, spec.chunk_shape[1:], strict=True))
        whole = spec.row_shape == spec.chunk_shape[1:]
        return cls(spec, dtype, spec.chunk_shape, chunk.nbytes, inner, whole, chunk)


class DecodedChunks:
    """A thread-safe cache of decoded chunks, bounded in bytes, first in first out.

    A plain dict under one lock, not ``cachetools``' LRU: a batch looks up every
    chunk it needs, and cachetools' Python-level LRU step cost 1.6 µs a lookup,
    an ``OrderedDict`` with ``move_to_end`` 0.8 µs, this 0.1 µs (one C-level
    ``map`` over the batch's keys, :meth:`get_many`).  In block order a chunk's
    rows are all read while its block is, so the oldest chunk is the one to drop.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._cache: dict[Any, npt.NDArray[Any]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._pending: dict[Any, threading.Event] = {}
        self.decoded = 0
        self.hits = 0

    def get(self, key: Any) -> npt.NDArray[Any] | None:
        with self._lock:
            return self._get_locked(key)

    def claim_many(
        self, keys: list[Any]
    ) -> tuple[list[npt.NDArray[Any] | None], list[int], list[tuple[int, threading.Event]]]:
        """For a batch's chunk ``keys``, under one lock: the cached chunks (``None``
        where missing), the positions this caller must decode (claimed: other
        threads asking meanwhile wait), and those another thread is decoding now,
        each with the event to wait for.  Release claims with :meth:`release_claims`.
        """
        with self._lock:
            found = list(map(self._cache.get, keys))
            claimed: list[int] = []
            waiting: list[tuple[int, threading.Event]] = []
            for position, chunk in enumerate(found):
                if chunk is not None:
                    continue
                key = keys[position]
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = threading.Event()
                    claimed.append(position)
                else:
                    waiting.append((position, pending))
        self.hits += len(found) - len(claimed) - len(waiting)
        return found, claimed, waiting

    def release_claims(self, keys: list[Any]) -> None:
        with self._lock:
            events = [self._pending.pop(key, None) for key in keys]
        for event in events:
            if event is not None:
                event.set()

    def _get_locked(self, key: Any) -> npt.NDArray[Any] | None:
        chunk = self._cache.get(key)
        if chunk is not None:
            self.hits += 1
        return chunk

    def claim(self, key: Any) -> tuple[npt.NDArray[Any] | None, threading.Event | None]:
        """The cached chunk; else ``(None, None)``, and the caller must decode it and
        :meth:`put` it (other threads asking meanwhile wait); else ``(None, event)``
        when another thread is decoding it: wait for the event, then ask again."""
        with self._lock:
            chunk = self._get_locked(key)
            if chunk is not None:
                return chunk, None
            pending = self._pending.get(key)
            if pending is None:
                self._pending[key] = threading.Event()
            return None, pending

    def release_claim(self, key: Any) -> None:
        self.release_claims([key])

    def put(self, key: Any, chunk: npt.NDArray[Any]) -> None:
        size = max(chunk.nbytes, 1)
        with self._lock:
            self.decoded += 1
            if self.max_bytes <= 0 or size > self.max_bytes:
                return
            old = self._cache.pop(key, None)
            if old is not None:
                self._bytes -= max(old.nbytes, 1)
            self._cache[key] = chunk
            self._bytes += size
            while self._bytes > self.max_bytes:
                evicted = self._cache.pop(next(iter(self._cache)))
                self._bytes -= max(evicted.nbytes, 1)


def read_raw_chunk(fd: int, table_row: npt.NDArray[np.int64]) -> tuple[bytes, int] | None:
    """A chunk's stored bytes and filter mask; ``None`` if it was never written."""
    offset, size, mask = table_row.tolist()
    if offset < 0:
        return None
    raw = os.pread(fd, size, offset)
    if len(raw) != size:
        raise OSError(f"short read of a chunk at byte {offset}: got {len(raw)} of {size} bytes")
    return raw, mask


def decode_raw_chunk(stored: tuple[bytes, int] | None, geometry: ChunkGeometry) -> npt.NDArray[Any]:
    if stored is None:
        return geometry.fill_chunk
    raw, mask = stored
    data = decode_chunk(raw, geometry.spec.filters, mask, geometry.chunk_bytes)
    return np.frombuffer(data, dtype=geometry.dtype).reshape(geometry.chunk_shape)


class ChunkSource:
    """The chunks of one (file, key): from the cache, or read and decoded now
    (then cached); one another thread is decoding is waited for."""

    __slots__ = ("cache", "cache_key", "fd", "geometry", "table")

    def __init__(
        self,
        fd: int,
        table: npt.NDArray[np.int64],
        geometry: ChunkGeometry,
        cache: DecodedChunks,
        cache_key: tuple[int, int],
    ) -> None:
        self.fd, self.table, self.geometry = fd, table, geometry
        self.cache, self.cache_key = cache, cache_key

    def chunk(self, number: int, first_row: int) -> npt.NDArray[Any]:
        key = (*self.cache_key, number)
        while True:  # another thread may be decoding it: wait for it, then look again
            chunk, pending = self.cache.claim(key)
            if chunk is not None:
                return chunk
            if pending is None:
                break  # this thread holds the claim
            pending.wait()
        try:
            chunk = decode_raw_chunk(read_raw_chunk(self.fd, self.table[number]), self.geometry)
            self.cache.put(key, chunk)
        except Exception as exc:
            raise ChunkReadError(
                f"chunk {number} at byte {int(self.table[number][0])}: {exc}", row=first_row
            ) from exc
        finally:
            self.cache.release_claim(key)
        return chunk


def read_chunked_rows(
    source: ChunkSource, rows: Sequence[int], positions: Sequence[int], out: npt.NDArray[Any]
) -> None:
    """Copy ``rows`` (sorted) of one file's chunked dataset into ``out[positions]``.

    Rows are taken chunk by chunk, so each chunk is fetched once per call.
    """
    geometry = source.geometry
    first_axis = geometry.chunk_shape[0]
    if geometry.whole_rows:
        current, chunk = -1, geometry.fill_chunk
        for row, position in zip(rows, positions, strict=True):
            number = row // first_axis
            if number != current:
                current, chunk = number, source.chunk(number, row)
            out[position, ...] = chunk[row - number * first_axis, ...]
        return
    _read_partial_rows(source, rows, positions, out)


def _read_partial_rows(
    source: ChunkSource, rows: Sequence[int], positions: Sequence[int], out: npt.NDArray[Any]
) -> None:
    """The general case: a row spans several chunks, some cut short at the edges."""
    geometry = source.geometry
    inner_grid = geometry.inner_grid
    per_chunk_row = int(np.prod(inner_grid, dtype=np.int64))
    rows_array = np.asarray(rows, dtype=np.int64)
    positions_array = np.asarray(positions, dtype=np.int64)
    first_axis = geometry.chunk_shape[0]
    chunk_rows = rows_array // first_axis
    breaks = [0, *(np.flatnonzero(np.diff(chunk_rows)) + 1).tolist(), len(rows_array)]
    for begin, end in itertools.pairwise(breaks):
        chunk_row = int(chunk_rows[begin])
        local = rows_array[begin:end] - chunk_row * first_axis
        targets = positions_array[begin:end]
        for inner_number, inner_index in enumerate(np.ndindex(*inner_grid)):
            chunk = source.chunk(chunk_row * per_chunk_row + inner_number, int(rows_array[begin]))
            destination: list[Any] = [targets]
            sources: list[Any] = [local]
            for axis, block in enumerate(inner_index):
                size = geometry.chunk_shape[axis + 1]
                start = block * size
                stop = min(start + size, geometry.spec.row_shape[axis])
                destination.append(slice(start, stop))
                sources.append(slice(0, stop - start))
            out[tuple(destination)] = chunk[tuple(sources)]

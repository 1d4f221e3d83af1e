"""Batch plans as arrays: what a batch reads, worked out with numpy, run in C.

Why: a batch of B rows used to be B trips through Python (a group per file, a
``preadv`` and a list of buffers per run).  Here a key's rows become arrays
with no Python loop per row:

- *contiguous* keys: ``(descriptor, file offset, file size)`` per row, in
  request order; :func:`h5pool.hdf5.kernel.read_rows` reads them straight into
  the output, merging rows that follow on in one file into one ``pread``, with
  the GIL released;
- *chunked* keys whose chunks hold whole rows: the distinct chunks the batch
  needs (``np.unique`` over their numbers in the key's chunk table) and, for
  each row, its chunk and row within it.  Each chunk is read and decoded once
  (cached ones not at all; one another batch is decoding is waited for), in
  threads split by stored bytes, and the kernel's ``gather_rows`` copies every
  row out of its chunk in one call.

Python loops per chunk and per thread, never per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.hdf5.byte_map import KeyMaps
from h5pool.hdf5.chunks import ChunkGeometry, DecodedChunks, decode_raw_chunk, read_raw_chunk
from h5pool.hdf5.decode import decode_deflate_chunks
from h5pool.hdf5.kernel import (
    PlanReadError,
    gather_rows,
    kernel_decodes,
    read_rows,
)
from h5pool.read.threads import BatchThreads, split_evenly

#: Chunks a thread must get for handing it a share to pay: dispatch costs about
#: as much as decoding two 32 KiB gzip chunks (measured on 2 cores).
CHUNKS_PER_THREAD = 4

#: A decoded chunk's cache key is ``chunk number * KEY_SLOTS + key number``.
KEY_SLOTS = 1 << 16

#: Raised for the first row a failure touches: ``(position in the plan, error)``.
OnError = Callable[[int, Exception], Exception]


@dataclass(frozen=True)
class Rows:
    """Rows of one key to read: where they come from and which slots they fill.

    ``slots`` are positions in the output (``None``: the rows are the whole
    output, in order); the other arrays have one entry per row.
    """

    files: IntArray
    rows: IntArray
    fds: IntArray
    slots: IntArray | None


def read_contiguous(
    plan: Rows,
    maps: KeyMaps,
    sizes: IntArray,
    out: npt.NDArray[Any],
    on_error: OnError,
) -> None:
    """Rows of a contiguous key: one C call for the whole plan."""
    row_bytes = out.strides[0] if out.ndim else out.itemsize
    if not out.nbytes:
        return
    offsets = maps.positions[plan.files] + plan.rows * row_bytes
    limits = sizes[plan.files]
    target = out if plan.slots is None else np.empty((len(plan.rows), *out.shape[1:]), out.dtype)
    try:
        read_rows(plan.fds, offsets, limits, row_bytes, target)
    except PlanReadError as exc:
        raise on_error(exc.position, exc) from exc
    if plan.slots is not None:
        out[plan.slots] = target


def read_whole_chunks(
    plan: Rows,
    number: int,
    maps: KeyMaps,
    geometries: list[ChunkGeometry | None],
    first_axes: IntArray,
    cache: DecodedChunks,
    threads: BatchThreads,
    sizes: IntArray,
    out: npt.NDArray[Any],
    on_error: OnError,
) -> int:
    """Rows of a chunked key whose chunks each hold whole rows; the chunks decoded."""
    spec_ids = maps.spec_ids[plan.files]
    first_axis = first_axes[spec_ids]
    chunk_rows = plan.rows // first_axis
    chunk_ids = maps.positions[plan.files] + chunk_rows  # numbers in maps.chunks
    unique, first_use, inverse = np.unique(chunk_ids, return_index=True, return_inverse=True)
    keys = (unique * KEY_SLOTS + number).tolist()  # one int per (key, chunk)
    chunks, claimed, waiting = cache.claim_many(keys)
    try:
        if claimed:
            _decode(plan, maps, geometries, spec_ids, keys, first_use, claimed, chunks,
                    cache, threads, sizes, on_error)  # fmt: skip
    finally:
        cache.release_claims([keys[u] for u in claimed])
    late = []  # decoded by another batch meanwhile, unless it failed or was not cached
    for u, event in waiting:
        event.wait()
        chunks[u] = cache.get(keys[u])
        if chunks[u] is None:
            late.append(u)
    if late:
        _decode(plan, maps, geometries, spec_ids, keys, first_use, late, chunks,
                cache, threads, sizes, on_error)  # fmt: skip
    if out.nbytes:
        slots = np.arange(len(plan.rows)) if plan.slots is None else plan.slots
        gather_rows(chunks, inverse, plan.rows - chunk_rows * first_axis, out, slots)  # type: ignore[arg-type]
    return len(claimed) + len(late)


def _decode(
    plan: Rows,
    maps: KeyMaps,
    geometries: list[ChunkGeometry | None],
    spec_ids: npt.NDArray[Any],
    keys: list[int],
    first_use: IntArray,
    missing: list[int],
    chunks: list[npt.NDArray[Any] | None],
    cache: DecodedChunks,
    threads: BatchThreads,
    sizes: IntArray,
    on_error: OnError,
) -> None:
    """Read and decode the ``missing`` chunks, in threads split by stored bytes.

    Deflate and shuffle pipelines run in the kernel, a share of chunks per call
    without the GIL; other filters decode chunk by chunk in Python (their
    decoders release the GIL themselves).
    """
    table = maps.chunks[np.asarray(keys)[missing] // KEY_SLOTS]
    users = first_use[missing]
    specs = spec_ids[users]
    geometry = geometries[int(specs[0])]
    assert geometry is not None
    in_kernel = bool((specs == specs[0]).all()) and kernel_decodes(geometry.spec.filters)
    written = [p for p in range(len(missing)) if table[p, 0] >= 0]
    for position in range(len(missing)):
        if table[position, 0] < 0:  # never written: the fill value
            chunks[missing[position]] = geometry_of(geometries, specs[position]).fill_chunk

    def decode_in_kernel(share: list[int]) -> None:
        outs = [np.empty(geometry.chunk_shape, geometry.dtype) for _ in share]
        picked = np.asarray(share, dtype=np.int64)
        fds = plan.fds[users[picked]]
        try:
            decode_deflate_chunks(fds, table[picked], sizes[plan.files[users[picked]]], outs,
                                  geometry.spec.filters)  # fmt: skip
        except PlanReadError as exc:
            raise on_error(int(users[share[exc.position]]), exc) from exc
        for position, out in zip(share, outs, strict=True):
            chunks[missing[position]] = out

    def decode_in_python(share: list[int]) -> None:
        for position in share:
            user = int(users[position])
            try:
                stored = read_raw_chunk(int(plan.fds[user]), table[position])
                chunk = decode_raw_chunk(stored, geometry_of(geometries, specs[position]))
            except Exception as exc:
                raise on_error(user, exc) from exc
            chunks[missing[position]] = chunk

    decode = decode_in_kernel if in_kernel else decode_in_python
    workers = min(threads.num_threads, len(written) // CHUNKS_PER_THREAD)
    if workers < 2:
        if written:
            decode(written)
    else:
        weights = np.maximum(table[written, 1], 1).tolist()
        threads.run(decode, split_evenly(written, workers, weights))
    for u in missing:
        chunk = chunks[u]
        assert chunk is not None
        cache.put(keys[u], chunk)


def geometry_of(geometries: list[ChunkGeometry | None], spec_id: Any) -> ChunkGeometry:
    geometry = geometries[int(spec_id)]
    assert geometry is not None
    return geometry

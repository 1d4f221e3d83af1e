"""Chunks stored with some of their filters skipped: HDF5's per-chunk filter mask.

A writer may store a chunk without a filter of the pipeline (a filter that
would grow the chunk is skipped with ``H5Z_FLAG_OPTIONAL``, or a chunk is
written directly); bit ``i`` of the chunk's mask says filter ``i`` was skipped,
and a reader must skip it too.  These files hold every mask of a shuffle +
deflate pipeline, written through ``write_direct_chunk``.
"""

from __future__ import annotations

import zlib

import h5py
import numpy as np

#: Rows per chunk.
CHUNK_ROWS = 2


def write_with_filter_masks(f: h5py.File, name: str, data: np.ndarray) -> None:
    """``data`` as shuffle + gzip chunks of two rows whose masks cycle through 0-3:
    both filters, deflate only (shuffle skipped), shuffle only, and none."""
    dataset = f.create_dataset(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=(CHUNK_ROWS, *data.shape[1:]),
        shuffle=True,
        compression="gzip",
    )
    for number, start in enumerate(range(0, data.shape[0], CHUNK_ROWS)):
        chunk = np.zeros((CHUNK_ROWS, *data.shape[1:]), dtype=data.dtype)
        part = data[start : start + CHUNK_ROWS]
        chunk[: len(part)] = part  # an edge chunk is stored whole
        mask = number % 4
        stored = chunk.tobytes()
        if not mask & 1:  # filter 0: shuffle, the bytes of each element apart
            width = data.dtype.itemsize
            stored = np.frombuffer(stored, np.uint8).reshape(-1, width).T.tobytes()
        if not mask & 2:  # filter 1: deflate
            stored = zlib.compress(stored, 4)
        origin = (start, *([0] * (data.ndim - 1)))
        dataset.id.write_direct_chunk(origin, stored, filter_mask=mask)

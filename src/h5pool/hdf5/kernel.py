"""The Python face of the compiled kernel (``_kernel.c``): errors as exceptions.

Why a face: the C functions report a failure as codes, without the GIL; here
a failure becomes an ``OSError`` that carries the plan position of the first
row or chunk it touched (``position``), which the read engine turns into a ``ReadError``
naming the file, key and sample.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

import h5pool.hdf5._kernel as _kernel

_SHORT_READ, _OUTSIDE, _NOT_DEFLATE, _WRONG_SIZE, _NO_MEMORY = -1, -2, -3, -4, -5
_CHUNK_MESSAGES = {
    _SHORT_READ: "short read: the file ends before the chunk (truncated or replaced?)",
    _OUTSIDE: "the chunk's bytes lie outside the file (damaged index or file?)",
    _NOT_DEFLATE: "the chunk is not a deflate stream (damaged chunk?)",
    _WRONG_SIZE: "the chunk does not decode to the chunk's size (damaged chunk?)",
    _NO_MEMORY: "no memory to decode the chunks",
}
#: The filters :func:`decode_chunks` undoes itself (HDF5's numbers).
DEFLATE, SHUFFLE = 1, 2


class PlanReadError(OSError):
    """A read of a plan failed; ``position`` is where in the plan (the first row
    or chunk affected)."""

    def __init__(self, message: str, *, position: int, code: int) -> None:
        super().__init__(code if code > 0 else errno.EIO, message)
        self.position = position
        self.message = message

    def __str__(self) -> str:
        return self.message


def read_rows(
    fds: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    limits: npt.NDArray[np.int64],
    row_bytes: int,
    out: npt.NDArray[Any],
) -> None:
    """Row ``i`` of the plan, ``row_bytes`` at ``offsets[i]`` of ``fds[i]``, into
    ``out[i]``; ``limits[i]`` is the size of the file, which no read passes."""
    failed, code = _kernel.read_rows(
        np.ascontiguousarray(fds, dtype=np.int64),
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(limits, dtype=np.int64),
        int(row_bytes),
        out.reshape(-1).view(np.uint8),
    )
    if code == 0:
        return
    if code == _SHORT_READ:
        message = "short read: the file ends before the row (truncated or replaced?)"
    elif code == _OUTSIDE:
        message = (
            f"the byte map puts the row at byte {int(offsets[failed]):,}, outside the file's "
            f"{int(limits[failed]):,} bytes (damaged index or file?)"
        )
    else:
        message = os.strerror(code)
    raise PlanReadError(message, position=failed, code=code)


def unshuffle(data: Any, itemsize: int) -> npt.NDArray[np.uint8]:
    """Undo HDF5's byte shuffle of ``data`` into a new array (bytes past the last
    whole element stay as they are)."""
    out = np.empty(memoryview(data).nbytes, dtype=np.uint8)
    _kernel.unshuffle(data, out, itemsize)
    return out


def unshuffle_into(data: Any, out: npt.NDArray[np.uint8], itemsize: int) -> None:
    """Undo HDF5's byte shuffle of ``data`` into ``out`` (as many bytes)."""
    _kernel.unshuffle(data, out, itemsize)


def inflate(data: Any, nbytes: int) -> npt.NDArray[np.uint8]:
    """zlib-inflate ``data`` into exactly ``nbytes`` (``ValueError`` otherwise)."""
    out = np.empty(nbytes, dtype=np.uint8)
    _kernel.inflate(data, out)
    return out


def decode_chunks(
    fds: npt.NDArray[np.int64],
    table: npt.NDArray[np.int64],
    limits: npt.NDArray[np.int64],
    outs: list[npt.NDArray[Any]],
    filters: tuple[tuple[int, tuple[int, ...]], ...],
) -> None:
    """Read chunk ``i`` (``table[i]`` is its offset, stored size and filter mask)
    from ``fds[i]``, undo ``filters`` (deflate and shuffle only) and fill ``outs[i]``.

    The whole list runs in one C call without the GIL, so threads given shares
    of a batch's chunks decode side by side.
    """
    deflate_at, shuffle_at, itemsize = pipeline_positions(filters)
    failed, code = _kernel.decode_chunks(
        np.ascontiguousarray(fds, dtype=np.int64),
        np.ascontiguousarray(table[:, 0], dtype=np.int64),
        np.ascontiguousarray(table[:, 1], dtype=np.int64),
        np.ascontiguousarray(table[:, 2], dtype=np.int64),
        np.ascontiguousarray(limits, dtype=np.int64),
        [out.reshape(-1).view(np.uint8) for out in outs],
        deflate_at,
        shuffle_at,
        itemsize,
    )
    if code != 0:
        message = _CHUNK_MESSAGES.get(code) or os.strerror(code)
        where = f"chunk at byte {int(table[failed, 0]):,}"
        raise PlanReadError(f"{where}: {message}", position=failed, code=code)


def pipeline_positions(filters: Sequence[tuple[int, Sequence[int]]]) -> tuple[int, int, int]:
    """``(deflate position, shuffle position, shuffle element size)`` in a
    pipeline of deflate and shuffle only (-1: absent); ``ValueError`` for others."""
    deflate_at = shuffle_at = -1
    itemsize = 1
    for position, (filter_id, params) in enumerate(filters):
        if filter_id == DEFLATE:
            deflate_at = position
        elif filter_id == SHUFFLE:
            shuffle_at, itemsize = position, int(params[0]) if params else 1
        else:
            raise ValueError(f"decode_chunks undoes deflate and shuffle, not filter {filter_id}")
    return deflate_at, shuffle_at, max(itemsize, 1)


def kernel_decodes(filters: tuple[tuple[int, tuple[int, ...]], ...]) -> bool:
    """True when :func:`decode_chunks` can undo the pipeline ``filters``."""
    return all(filter_id in (DEFLATE, SHUFFLE) for filter_id, _ in filters)


def gather_rows(
    sources: list[npt.NDArray[Any]],
    which: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    out: npt.NDArray[Any],
    slots: npt.NDArray[np.int64],
) -> None:
    """``out[slots[i]] = sources[which[i]][rows[i]]`` for every ``i``, in one C call
    (the rows of ``out`` and of every source are the same number of bytes)."""
    row_bytes = out.strides[0] if out.ndim else out.itemsize
    _kernel.gather_rows(
        sources,
        np.ascontiguousarray(which, dtype=np.int64),
        np.ascontiguousarray(rows, dtype=np.int64),
        int(row_bytes),
        out.reshape(-1).view(np.uint8),
        np.ascontiguousarray(slots, dtype=np.int64),
    )

"""The Python face of the compiled kernel (``_kernel.c``): errors as exceptions.

Why a face: the C functions report a failure as codes, without the GIL; here
a failure becomes an ``OSError`` that carries the plan position of the first
row it touched (``row``), which the read engine turns into a ``ReadError``
naming the file, key and sample.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import numpy as np
import numpy.typing as npt

import h5pool.hdf5._kernel as _kernel

_SHORT_READ, _OUTSIDE = -1, -2


class PlanReadError(OSError):
    """A read of a plan failed; ``row`` is the plan position of the first row affected."""

    def __init__(self, message: str, *, row: int, code: int) -> None:
        super().__init__(code if code > 0 else errno.EIO, message)
        self.row = row


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
    raise PlanReadError(message, row=failed, code=code)


def unshuffle(data: Any, itemsize: int) -> npt.NDArray[np.uint8]:
    """Undo HDF5's byte shuffle of ``data`` into a new array (bytes past the last
    whole element stay as they are)."""
    out = np.empty(memoryview(data).nbytes, dtype=np.uint8)
    _kernel.unshuffle(data, out, itemsize)
    return out


def inflate(data: Any, nbytes: int) -> npt.NDArray[np.uint8]:
    """zlib-inflate ``data`` into exactly ``nbytes`` (``ValueError`` otherwise)."""
    out = np.empty(nbytes, dtype=np.uint8)
    _kernel.inflate(data, out)
    return out

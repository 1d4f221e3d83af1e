"""Reading rows of one dataset of one open file, one at a time or as a batch.

Two paths, chosen once per (handle, dataset) when the handle is first used:

* **Direct** — for contiguous, unfiltered, fixed-size numeric datasets on the
  default ``sec2`` driver, the bytes of row ``r`` sit at ``offset + r * row_bytes``
  in the file, so a row is one ``os.pread`` on HDF5's own descriptor: no
  dataspace, no type conversion, no extra descriptor.  A batch reads each run
  of consecutive rows with a single ``preadv``.
* **HDF5** — everything else (chunked, compressed, virtual, external, strings,
  other drivers) goes through h5py's low-level ``DatasetID.read`` with a
  memory dataspace kept per reader, and a batch becomes one read of a union of
  hyperslabs: at most one HDF5 read call per (file, key) per batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5pool.errors import ReadError
from h5pool.pool import PooledFile

IntArray = npt.NDArray[np.int64]
_DIRECT_KINDS = frozenset("biufc")


def direct_offset(dataset: h5py.Dataset) -> int | None:
    """File offset of a dataset whose raw bytes can be read as they are, else ``None``.

    Only contiguous layouts qualify (chunked, compact, virtual and external
    storage, and therefore every filter, are excluded), and only fixed-size
    numeric types whose size in the file equals numpy's.
    """
    dtype = dataset.dtype
    if dtype.kind not in _DIRECT_KINDS or dtype.hasobject:
        return None
    dcpl = dataset.id.get_create_plist()
    if dcpl.get_layout() != h5py.h5d.CONTIGUOUS or dcpl.get_external_count() > 0:
        return None
    if dataset.id.get_type().get_size() != dtype.itemsize:
        return None
    offset = dataset.id.get_offset()
    return int(offset) if offset is not None else None


class RowReader:
    """Reads rows (slices along axis 0) of one dataset through one pooled handle."""

    __slots__ = (
        "_dataset",
        "_fd",
        "_memory_space",
        "_offset",
        "dtype",
        "key",
        "length",
        "path",
        "row_bytes",
        "row_shape",
    )

    def __init__(self, entry: PooledFile, key: str) -> None:
        dataset = entry.dataset(key)
        shape = dataset.shape
        self.path = entry.path
        self.key = key
        self.length = int(shape[0])
        self.row_shape: tuple[int, ...] = tuple(int(n) for n in shape[1:])
        self.dtype: np.dtype[Any] = dataset.dtype
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._dataset = dataset
        fd = entry.raw_fd()
        offset = direct_offset(dataset) if fd is not None else None
        self._fd = fd if offset is not None else None
        self._offset = offset or 0
        self._memory_space = h5py.h5s.create_simple((1, *self.row_shape))

    @property
    def direct(self) -> bool:
        return self._fd is not None

    def read_row(self, row: int) -> npt.NDArray[Any]:
        out = np.empty(self.row_shape, dtype=self.dtype)
        try:
            if self._fd is not None:
                self._pread_into(out, self._offset + row * self.row_bytes)
            elif self.dtype.kind in "OSUV" or self.row_bytes == 0:
                out = np.asarray(self._dataset[row])
            else:
                # A fresh file space per call: a shared one would race between threads.
                space = self._dataset.id.get_space()
                space.select_hyperslab((row,) + (0,) * len(self.row_shape), (1, *self.row_shape))
                self._dataset.id.read(self._memory_space, space, out)
        except ReadError:
            raise
        except Exception as exc:
            raise self._read_error(f"row {row}", exc) from exc
        return out

    def read_rows(self, rows: IntArray) -> npt.NDArray[Any]:
        """Rows ``rows`` (sorted, unique) stacked on axis 0, with one read per run."""
        out = self.empty_rows(len(rows))
        if not len(rows):
            return out
        if self._fd is not None:
            self.read_rows_into(rows.tolist(), range(len(rows)), out)
            return out
        try:
            if self.dtype.kind in "OSUV" or self.row_bytes == 0:
                out[...] = self._dataset[rows]
            else:
                self._read_runs_hdf5(rows, out)
        except ReadError:
            raise
        except Exception as exc:
            raise self._read_error(f"rows {int(rows[0])}..{int(rows[-1])}", exc) from exc
        return out

    def empty_rows(self, count: int) -> npt.NDArray[Any]:
        return np.empty((count, *self.row_shape), dtype=self.dtype)

    def read_rows_into(
        self,
        rows: Sequence[int],
        positions: Sequence[int],
        out: npt.NDArray[Any],
        out_bytes: memoryview | None = None,
    ) -> None:
        """Read ``rows`` (sorted, repeats allowed) into ``out[positions]``.

        The direct path reads each run of consecutive rows with one ``preadv``
        whose buffers are the run's destination slots, so the bytes go from the
        page cache straight to where the batch wants them.  ``out_bytes`` is
        ``out`` as a flat byte view; a caller filling ``out`` from many files
        makes it once.
        """
        try:
            if self._fd is not None:
                if self.row_bytes:
                    if out_bytes is None:
                        out_bytes = out.data.cast("B")
                    self._scatter_runs_direct(rows, positions, out_bytes)
                return
            unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
            out[np.asarray(positions, dtype=np.int64)] = self.read_rows(unique)[inverse]
        except ReadError:
            raise
        except Exception as exc:
            raise self._read_error(f"rows {rows[0]}..{rows[-1]}", exc) from exc

    # -- internals ------------------------------------------------------------------

    def _scatter_runs_direct(
        self, rows: Sequence[int], positions: Sequence[int], out_bytes: memoryview
    ) -> None:
        fd, base, row_bytes = self._fd, self._offset, self.row_bytes
        assert fd is not None
        first, count = 0, len(rows)
        while first < count:
            last = first + 1
            while last < count and rows[last] == rows[last - 1] + 1:
                last += 1
            buffers = [
                out_bytes[p * row_bytes : (p + 1) * row_bytes] for p in positions[first:last]
            ]
            wanted = row_bytes * (last - first)
            got = os.preadv(fd, buffers, base + rows[first] * row_bytes)
            if got != wanted:
                raise ReadError(
                    f"{self.path}: short read of {self.key!r} at row {rows[first]}: got {got} "
                    f"of {wanted} bytes (file truncated or replaced?)",
                    path=self.path,
                )
            first = last

    def _pread_into(self, out: npt.NDArray[Any], offset: int) -> None:
        assert self._fd is not None
        got = os.preadv(self._fd, [out.data], offset)
        if got != out.nbytes:
            raise ReadError(
                f"{self.path}: short read of {self.key!r} at byte {offset}: got {got} of "
                f"{out.nbytes} bytes (file truncated or replaced?)",
                path=self.path,
            )

    def _read_runs_hdf5(self, rows: IntArray, out: npt.NDArray[Any]) -> None:
        run_starts, run_lengths = consecutive_runs(rows)
        space = self._dataset.id.get_space()
        space.select_none()
        zeros = (0,) * len(self.row_shape)
        for start, length in zip(run_starts.tolist(), run_lengths.tolist(), strict=True):
            space.select_hyperslab(
                (start, *zeros), (length, *self.row_shape), op=h5py.h5s.SELECT_OR
            )
        memory = h5py.h5s.create_simple(out.shape)
        self._dataset.id.read(memory, space, out)

    def _read_error(self, what: str, exc: Exception) -> ReadError:
        return ReadError(
            f"{self.path}: reading {what} of {self.key!r} failed: {exc}", path=self.path
        )


def consecutive_runs(rows: IntArray) -> tuple[IntArray, IntArray]:
    """Split sorted unique ``rows`` into runs of consecutive values: (starts, lengths)."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts_at = np.concatenate(([0], breaks))
    ends_at = np.concatenate((breaks, [len(rows)]))
    return rows[starts_at], (ends_at - starts_at).astype(np.int64)


def read_member(entry: PooledFile, name: str) -> npt.NDArray[Any]:
    """A whole dataset, read directly when its bytes are contiguous."""
    dataset = entry.dataset(name)
    try:
        fd = entry.raw_fd()
        offset = direct_offset(dataset) if fd is not None else None
        if fd is None or offset is None or dataset.shape is None:
            return np.asarray(dataset[()])
        out = np.empty(dataset.shape, dtype=dataset.dtype)
        got = os.preadv(fd, [out.data], offset) if out.nbytes else 0
        if got != out.nbytes:
            raise OSError(f"short read: got {got} of {out.nbytes} bytes")
        return out
    except Exception as exc:
        raise ReadError(
            f"{entry.path}: reading member {name!r} failed: {exc}", path=entry.path
        ) from exc


def decode_attrs(node: h5py.HLObject) -> dict[str, Any]:
    """Attributes as Python/numpy values, with every string decoded to ``str``."""
    return {name: _decode(value) for name, value in node.attrs.items()}


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return [_decode(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value

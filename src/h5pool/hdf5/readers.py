"""Reading rows and members of one open file: ``pread`` of contiguous rows, and HDF5.

* :func:`scatter_runs` reads rows of a contiguous dataset whose offset a byte
  map gives: one ``preadv`` per run of consecutive rows, straight into the batch.
* :class:`RowReader` is the HDF5 fallback for datasets without a byte map.
* :func:`read_member` reads a whole dataset (the "members" layout).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.errors import ReadError, UnreadableFileError
from h5pool.hdf5.byte_map import filter_name, held_elsewhere
from h5pool.pool.pooled_file import PooledFile

_DIRECT_KINDS = frozenset("biufc")


def direct_offset(dataset: h5py.Dataset, path: str) -> int | None:
    """Offset in the file at ``path`` of a dataset whose raw bytes can be read
    as they are, else ``None``.

    Only contiguous layouts qualify (chunked, compact, virtual and external
    storage, and therefore every filter, are excluded), only fixed-size
    numeric types whose size in the file equals numpy's, and only datasets
    whose bytes are in ``path`` itself, not reached through an external link.
    """
    dtype = dataset.dtype
    if dtype.kind not in _DIRECT_KINDS or dtype.hasobject:
        return None
    dcpl = dataset.id.get_create_plist()
    if dcpl.get_layout() != h5py.h5d.CONTIGUOUS or dcpl.get_external_count() > 0:
        return None
    if dataset.id.get_type().get_size() != dtype.itemsize:
        return None
    if held_elsewhere(dataset, path):
        return None
    offset = dataset.id.get_offset()
    return int(offset) if offset is not None else None


class RowReader:
    """Reads rows (slices along axis 0) of one dataset through HDF5.

    The fallback for datasets without a byte map (see :mod:`h5pool.hdf5.byte_map`):
    one read of a union of hyperslabs per call, so HDF5 converts types, follows
    virtual and external storage, and runs filters h5pool cannot undo.
    """

    __slots__ = (
        "_dataset",
        "_file_row_shape",
        "_memory_type",
        "dtype",
        "key",
        "length",
        "path",
        "row_shape",
    )

    def __init__(self, entry: PooledFile, key: str) -> None:
        dataset = entry.dataset(key)
        shape = dataset.shape
        self.path = entry.path
        self.key = key
        self.length = int(shape[0])
        self._file_row_shape = tuple(int(n) for n in shape[1:])
        self.row_shape: tuple[int, ...] = self._file_row_shape
        self.dtype: np.dtype[Any] = dataset.dtype
        #: HDF5 array types come out as their base type with trailing axes, as
        #: h5py gives them; HDF5 then converts into that memory type.
        self._memory_type: Any = None
        if self.dtype.subdtype is not None:
            self._memory_type = h5py.h5t.py_create(self.dtype)
            self.dtype, axes = self.dtype.subdtype
            self.row_shape = (*self.row_shape, *axes)
        self._dataset = dataset

    def read_rows(self, rows: IntArray) -> npt.NDArray[Any]:
        """Rows ``rows`` (sorted, unique) stacked on axis 0, in one HDF5 read."""
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if not len(rows):
            return out
        if self.dtype.kind in "OSUV" or not out.nbytes:
            out[...] = self._dataset[rows]
        else:
            self._read_runs_hdf5(rows, out)
        return out

    def read_rows_into(
        self, rows: Sequence[int], positions: Sequence[int], out: npt.NDArray[Any]
    ) -> None:
        """Read ``rows`` (sorted, repeats allowed) into ``out[positions]``."""
        unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        out[np.asarray(positions, dtype=np.int64)] = self.read_rows(unique)[inverse]

    def _read_runs_hdf5(self, rows: IntArray, out: npt.NDArray[Any]) -> None:
        run_starts, run_lengths = consecutive_runs(rows)
        space = self._dataset.id.get_space()
        space.select_none()
        zeros = (0,) * len(self._file_row_shape)
        for start, length in zip(run_starts.tolist(), run_lengths.tolist(), strict=True):
            space.select_hyperslab(
                (start, *zeros), (length, *self._file_row_shape), op=h5py.h5s.SELECT_OR
            )
        memory = h5py.h5s.create_simple((len(out), *self._file_row_shape))
        self._dataset.id.read(memory, space, out, self._memory_type)


def scatter_runs(
    fd: int,
    base: int,
    row_bytes: int,
    rows: Sequence[int],
    positions: Sequence[int],
    out_bytes: memoryview,
) -> None:
    """Read rows of a contiguous dataset at ``base`` into slots ``positions`` of a batch.

    Each run of consecutive rows is one ``preadv`` whose buffers are the run's
    destination slots, so the bytes go from the page cache straight to where
    the batch wants them.  ``out_bytes`` is the batch array as flat bytes.
    """
    first, count = 0, len(rows)
    while first < count:
        last = first + 1
        while last < count and rows[last] == rows[last - 1] + 1:
            last += 1
        buffers = [out_bytes[p * row_bytes : (p + 1) * row_bytes] for p in positions[first:last]]
        wanted = row_bytes * (last - first)
        got = os.preadv(fd, buffers, base + rows[first] * row_bytes)
        if got != wanted:
            raise OSError(
                f"short read at row {rows[first]}: got {got} of {wanted} bytes "
                "(file truncated or replaced?)"
            )
        first = last


def consecutive_runs(rows: IntArray) -> tuple[IntArray, IntArray]:
    """Split sorted unique ``rows`` into runs of consecutive values: (starts, lengths)."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts_at = np.concatenate(([0], breaks))
    ends_at = np.concatenate((breaks, [len(rows)]))
    return rows[starts_at], (ends_at - starts_at).astype(np.int64)


#: Filters that do not shrink data: with only these, every byte is in the file.
_SIZE_KEEPING_FILTERS = frozenset({h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32})


def check_fits_in_file(dataset: h5py.Dataset, path: str, part: int, what: str) -> None:
    """Refuse ``part`` bytes of uncompressed data that the file is too small to hold.

    Damaged metadata can make a 1 KB file claim rows of 32 GiB; allocating for
    them fails (or, with overcommit, takes the machine's memory).  Data stored
    without a compressing filter must fit in the file, so this is an
    :class:`UnreadableFileError` before anything is allocated.
    """
    dcpl = dataset.id.get_create_plist()
    filters = {dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())}
    if not filters <= _SIZE_KEEPING_FILTERS:
        return
    size = dataset.file.id.get_filesize()
    if part > size:
        raise UnreadableFileError(
            f"{path}: {what} of {part:,} bytes cannot be stored uncompressed in a file of "
            f"{size:,} bytes (damaged metadata, or data never written)",
            path=path,
        )


def check_filters_available(dataset: h5py.Dataset, path: str, what: str) -> None:
    """Name a compression filter this HDF5 library cannot run, and the fix.

    Without it HDF5 fails at the first read with "can't open directory
    /usr/local/lib/plugin", which names neither the filter nor the cure.
    """
    dcpl = dataset.id.get_create_plist()
    for number in range(dcpl.get_nfilters()):
        filter_id = int(dcpl.get_filter(number)[0])
        if not h5py.h5z.filter_avail(filter_id):
            raise UnreadableFileError(
                f"{path}: {what} is stored with HDF5 filter {filter_id} "
                f"({filter_name(filter_id)}), which this HDF5 cannot decode: "
                "pip install hdf5plugin, and import hdf5plugin before reading",
                path=path,
            )


def nbytes_of(dataset: h5py.Dataset, rows: int | None = None) -> int:
    """Bytes of the whole dataset, or of ``rows`` rows of it, in memory."""
    shape = dataset.shape
    if shape is None:
        return 0
    if rows is not None:
        shape = (rows, *shape[1:])
    return int(np.prod(shape, dtype=np.int64)) * int(dataset.dtype.itemsize)


def read_member(entry: PooledFile, name: str) -> npt.NDArray[Any]:
    """A whole dataset, read directly when its bytes are contiguous."""
    dataset = entry.dataset(name)
    check_fits_in_file(dataset, entry.path, nbytes_of(dataset), f"member {name!r}")
    check_filters_available(dataset, entry.path, f"member {name!r}")
    try:
        fd = entry.raw_fd()
        offset = direct_offset(dataset, entry.path) if fd is not None else None
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
    """Attributes as plain, picklable Python values: strings decoded to ``str``,
    object references replaced by the path of the object they point to (netCDF
    keeps references in ``DIMENSION_LIST``; a worker cannot pickle them)."""
    return {name: _decode(value, node.file) for name, value in node.attrs.items()}


def _decode(value: Any, file: h5py.File) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, h5py.Reference | h5py.RegionReference):
        return _referenced_path(value, file)
    if isinstance(value, np.ndarray) and (value.dtype.kind in "SO" or value.dtype.fields):
        return [_decode(v, file) for v in value.tolist()]
    if isinstance(value, tuple):  # a compound record, as tolist() gives it
        return tuple(_decode(v, file) for v in value)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return _decode(value.item(), file)
    return value


def _referenced_path(reference: h5py.Reference, file: h5py.File) -> str:
    if not reference:
        return ""
    try:
        return str(file[reference].name)
    except Exception:  # a dangling reference of a damaged file
        return "<unresolvable reference>"

"""Byte maps: where a dataset's bytes sit in its file, recorded once at index time.

Why: with a byte map a read needs no libhdf5 at all, only an ``os.open`` and
``pread`` (and, for chunked data, a decoder).  That removes the 150-300 µs
HDF5 open from every file visit and the hyperslab machinery from every read.

A map is made only when the bytes on disk, once decoded, are *exactly* the
bytes numpy holds for the dataset's dtype: contiguous or chunked layout, a
fixed-size numeric type that HDF5 would convert to that dtype without changing
a bit, and filters h5pool can decode.  Everything else gets a :class:`KeySpec`
of kind ``"hdf5"`` with the reason, and is read through HDF5 as before.

Maps of one key across the corpus are kept as arrays (see :class:`KeyMaps`) and
a short list of distinct :class:`KeySpec` s, because thousands of files
usually share one dtype, row shape, chunk shape and filter pipeline.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.hdf5.decode import decodable_reason

_NUMERIC_KINDS = frozenset("biufc")

#: What a dataset's kind means for a reader.
CONTIGUOUS, CHUNKED, HDF5 = "contiguous", "chunked", "hdf5"


@dataclass(frozen=True)
class KeySpec:
    """How one key of one file is stored, minus the per-file offsets.

    ``filters`` is HDF5's pipeline in write order: ``(filter id, cd_values)``.
    ``fill`` is the hex of one element of the fill value (chunked data only).
    ``reason`` says why a dataset is read through HDF5 (empty for the others).
    """

    kind: str
    dtype: str
    row_shape: tuple[int, ...]
    chunk_shape: tuple[int, ...] = ()
    filters: tuple[tuple[int, tuple[int, ...]], ...] = ()
    fill: str = ""
    reason: str = ""

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return dtype_from_text(self.dtype)

    def row_nbytes(self) -> int:
        """Bytes of one row in memory (and, for contiguous storage, on disk)."""
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.numpy_dtype.itemsize

    def describe(self, *, remote: bool = False) -> str:
        """One line for ``h5pool info``: the path a read takes, and why."""
        reads = "ranged reads of blocks" if remote else "pread"
        if self.kind == CONTIGUOUS:
            return f"byte map (contiguous, {reads})"
        if self.kind == CHUNKED:
            names = "+".join(filter_name(fid) for fid, _ in self.filters) or "no filters"
            where = ", ranged reads of blocks" if remote else ""
            return f"byte map (chunks {self.chunk_shape}, decoded: {names}{where})"
        return f"HDF5 ({self.reason})"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dtype": self.dtype,
            "row_shape": list(self.row_shape),
            "chunk_shape": list(self.chunk_shape),
            "filters": [[fid, list(params)] for fid, params in self.filters],
            "fill": self.fill,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeySpec:
        return cls(
            kind=data["kind"],
            dtype=data["dtype"],
            row_shape=tuple(data["row_shape"]),
            chunk_shape=tuple(data["chunk_shape"]),
            filters=tuple((int(f), tuple(int(p) for p in ps)) for f, ps in data["filters"]),
            fill=data["fill"],
            reason=data["reason"],
        )


@dataclass(frozen=True)
class FileKeyMap:
    """One key of one file: its spec, and the file positions a read needs.

    Contiguous: ``offset`` is the file offset of row 0.  Chunked: ``chunks`` is
    ``(offset, stored size, filter mask)`` per chunk of the chunk grid in
    row-major order, with offset -1 for a chunk never written (it reads as the
    fill value).
    """

    spec: KeySpec
    offset: int = -1
    chunks: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty((0, 3), np.int64))


def dtype_to_text(dtype: np.dtype[Any]) -> str:
    """The dtype as JSON; h5py's metadata (enum names, string encodings) is dropped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return json.dumps(np.lib.format.dtype_to_descr(dtype))
    except (TypeError, ValueError):
        return json.dumps("|O")


def dtype_from_text(text: str) -> np.dtype[Any]:
    descr = json.loads(text)
    if isinstance(descr, list):
        descr = [tuple(_tuples(field)) for field in descr]
    return np.lib.format.descr_to_dtype(descr)


def _tuples(value: Any) -> Any:
    return [tuple(_tuples(v)) if isinstance(v, list) else v for v in value]


def filter_name(filter_id: int) -> str:
    return _FILTER_NAMES.get(filter_id, f"filter {filter_id}")


_FILTER_NAMES = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
    32001: "blosc",
    32004: "lz4",
    32008: "bitshuffle",
    32015: "zstd",
    32026: "blosc2",
}


def map_dataset(
    dataset: h5py.Dataset, path: str, *, local: bool = True, root: h5py.File | None = None
) -> FileKeyMap:
    """The byte map of ``dataset`` as stored in the file at ``path``, or an HDF5 spec.

    ``local`` is false for drivers that split a file over several (their
    offsets are not offsets of ``path``).  ``root`` is the file opened at
    ``path`` when it is a remote object read through a file object: its
    offsets are offsets in the object, read later by ranged requests, and a
    dataset of another file (an external link) is refused by identity.
    """
    dtype = dataset.dtype
    shape = dataset.shape  # a property that asks HDF5 each time: once here
    row_shape = tuple(int(n) for n in shape[1:]) if shape else ()
    if dtype.subdtype is not None:
        # An HDF5 array type: h5py gives its elements as trailing axes, so do we.
        # HDF5 reads it (a shuffle filter of one would work on the whole element).
        base, axes = dtype.subdtype
        spec = KeySpec(HDF5, dtype_to_text(base), (*row_shape, *axes), reason="HDF5 array type")
        return FileKeyMap(spec)
    text = dtype_to_text(dtype)

    def hdf5(reason: str) -> FileKeyMap:
        return FileKeyMap(KeySpec(HDF5, text, row_shape, reason=reason))

    reason = _unmappable_reason(dataset, shape, path, local, root)
    if reason:
        return hdf5(reason)
    dcpl = dataset.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dataset.id.get_offset()
        if offset is None:  # never written: HDF5 returns the fill value
            return hdf5("contiguous storage not allocated yet")
        return FileKeyMap(KeySpec(CONTIGUOUS, text, row_shape), offset=int(offset))
    if layout != h5py.h5d.CHUNKED:
        names = {h5py.h5d.COMPACT: "compact", h5py.h5d.VIRTUAL: "virtual"}
        return hdf5(f"{names.get(layout, 'unknown')} layout")
    filters = tuple(
        (int(fid), tuple(int(v) for v in params))
        for fid, _flags, params, _name in (dcpl.get_filter(i) for i in range(dcpl.get_nfilters()))
    )
    undecodable = decodable_reason(filters)
    if undecodable:
        return hdf5(undecodable)
    chunk_shape = tuple(int(n) for n in dataset.chunks)
    fill = np.zeros(1, dtype=dtype)
    if dataset.fillvalue is not None:
        fill[0] = dataset.fillvalue
    spec = KeySpec(CHUNKED, text, row_shape, chunk_shape, filters, fill.tobytes().hex())
    return FileKeyMap(spec, chunks=chunk_table(dataset))


def _unmappable_reason(
    dataset: h5py.Dataset,
    shape: tuple[int, ...] | None,
    path: str,
    local: bool,
    root: h5py.File | None,
) -> str:
    if not local:
        return "a multi-file driver"
    dtype = dataset.dtype
    if shape is None or not shape:
        return "scalar or empty dataspace"
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields:
        return f"type {dtype} is not a fixed-size number"
    file_type = dataset.id.get_type()
    try:
        same = (
            file_type.equal(h5py.h5t.py_create(dtype, logical=True))
            and file_type.get_size() == dtype.itemsize
        )
    except (TypeError, ValueError):
        same = False
    if not same:
        return f"stored type differs from {dtype} (reduced precision or non-native layout)"
    if dataset.id.get_create_plist().get_external_count() > 0:
        return "external raw storage"
    if root is not None:
        return "" if dataset.file.id == root.id else "reached through an external link"
    return held_elsewhere(dataset, path)


def held_elsewhere(dataset: h5py.Dataset, path: str) -> str:
    """Why the bytes of ``dataset`` are not in the file at ``path``, else ``""``.

    An external link opens its target in another file, and ``get_offset()``
    is an offset into *that* file: reading it from ``path``'s descriptor gives
    another dataset's bytes.  Every direct read must ask this first.
    """
    holder = dataset.file.filename
    if holder != path and os.path.realpath(holder) != os.path.realpath(path):
        return f"reached through an external link into {holder}"
    return ""


def chunk_table(dataset: h5py.Dataset) -> npt.NDArray[np.int64]:
    """``(offset, size, filter mask)`` of every chunk of the grid, row-major; -1 unwritten."""
    shape = dataset.shape
    chunks = dataset.chunks
    grid = tuple(-(-int(n) // int(c)) for n, c in zip(shape, chunks, strict=True))
    table = np.full((int(np.prod(grid, dtype=np.int64)), 3), -1, dtype=np.int64)
    strides = np.cumprod((1, *grid[:0:-1]))[::-1]

    def record(info: Any) -> None:
        number = sum(
            (int(o) // int(c)) * int(s)
            for o, c, s in zip(info.chunk_offset, chunks, strides, strict=True)
        )
        table[number] = (int(info.byte_offset), int(info.size), int(info.filter_mask))

    dsid = dataset.id
    if hasattr(dsid, "chunk_iter"):
        dsid.chunk_iter(record)
    else:  # HDF5 < 1.12.3: one call per chunk
        for i in range(dsid.get_num_chunks()):
            record(dsid.get_chunk_info(i))
    return table


@dataclass
class KeyMaps:
    """The byte maps of one key over every file of an index, as arrays.

    ``spec_ids[f]`` picks file ``f``'s :class:`KeySpec` from ``specs``;
    ``positions[f]`` is its contiguous data offset, or for chunked data the
    first row of its chunks in ``chunks`` (``(offset, size, mask)`` rows).  A
    file's chunk count follows from its row count and the spec's chunk grid.
    """

    specs: list[KeySpec]
    spec_ids: npt.NDArray[np.int32]
    positions: IntArray
    chunks: npt.NDArray[np.int64]

    @classmethod
    def from_files(cls, maps: list[FileKeyMap]) -> KeyMaps:
        specs: dict[KeySpec, int] = {}
        ids = np.empty(len(maps), dtype=np.int32)
        positions = np.empty(len(maps), dtype=np.int64)
        tables: list[npt.NDArray[np.int64]] = []
        filled = 0
        for number, file_map in enumerate(maps):
            ids[number] = specs.setdefault(file_map.spec, len(specs))
            if file_map.spec.kind == CHUNKED:
                positions[number] = filled
                tables.append(file_map.chunks)
                filled += len(file_map.chunks)
            else:
                positions[number] = file_map.offset
        chunks = np.concatenate(tables) if tables else np.empty((0, 3), dtype=np.int64)
        return cls(list(specs), ids, positions, chunks.astype(np.int64, copy=False))

    def spec(self, file_number: int) -> KeySpec:
        return self.specs[int(self.spec_ids[file_number])]

    @property
    def nbytes(self) -> int:
        return int(self.spec_ids.nbytes + self.positions.nbytes + self.chunks.nbytes)

    def file_map(self, file_number: int, rows: int) -> FileKeyMap:
        """File ``file_number``'s map back as one object (for reusing a cached index)."""
        spec = self.spec(file_number)
        position = int(self.positions[file_number])
        if spec.kind != CHUNKED:
            return FileKeyMap(spec, offset=position)
        count = chunk_count(spec, rows)
        return FileKeyMap(spec, chunks=self.chunks[position : position + count])


def chunk_grid(spec: KeySpec, rows: int) -> tuple[int, ...]:
    """Chunks per axis of a dataset of ``rows`` rows stored as ``spec`` says."""
    shape = (rows, *spec.row_shape)
    return tuple(-(-n // c) for n, c in zip(shape, spec.chunk_shape, strict=True))


def chunk_count(spec: KeySpec, rows: int) -> int:
    return int(np.prod(chunk_grid(spec, rows), dtype=np.int64))

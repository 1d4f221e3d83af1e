"""How each key of each file is read, worked out once per engine as arrays.

Why apart from the engine: the engine runs batches; which way each (key,
file) goes (the kernel, whole chunks, cut chunks, HDF5), what ``ds[i]`` looks
up per key, and which files can take the shortest path are facts of the index
and of this process's decoders, fixed for the engine's life.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.hdf5.byte_map import CHUNKED, CONTIGUOUS, HDF5, KeyMaps, KeySpec
from h5pool.hdf5.chunks import ChunkGeometry
from h5pool.hdf5.decode import decodable_reason
from h5pool.pool.remote import is_url
from h5pool.read.values import tensor_ready

#: How a key of a file is read through the file table: by the kernel, by whole
#: chunks, by chunks that cut rows (the general case), or through HDF5.
CONTIGUOUS_ROWS, WHOLE_CHUNKS, PARTIAL_CHUNKS, THROUGH_HDF5 = 0, 1, 2, 3


class KeyKinds:
    """Per key and spec, and per key and file, how rows are read.

    Parameters
    ----------
    maps
        Each key's byte maps, in the order of the keys.
    plain_descriptor
        The pool gives plain descriptors (else every key goes through HDF5).
    """

    def __init__(self, maps: list[KeyMaps], plain_descriptor: bool) -> None:
        files = len(maps[0].spec_ids) if maps else 0
        #: Per key and spec: numpy dtype, row shape, kind, chunk geometry, first chunk axis.
        self.dtypes = [[s.numpy_dtype for s in m.specs] for m in maps]
        self.row_shapes = [[s.row_shape for s in m.specs] for m in maps]
        self.kinds = [[effective_kind(s, plain_descriptor) for s in m.specs] for m in maps]
        self.geometry = [
            [ChunkGeometry.of(s) if kind == CHUNKED else None for s, kind in zip(m.specs, kinds)]  # noqa: B905
            for m, kinds in zip(maps, self.kinds, strict=True)
        ]
        self.first_axes = [
            np.array([g.chunk_shape[0] if g else 1 for g in geometries], dtype=np.int64)
            for geometries in self.geometry
        ]
        #: Per key, per file: a code above.
        self.file_codes = [
            kind_codes(kinds, geometries)[m.spec_ids]
            for m, kinds, geometries in zip(maps, self.kinds, self.geometry, strict=True)
        ]
        needs_hdf5 = np.zeros(files, dtype=bool)
        contiguous = np.ones(files, dtype=bool)
        tensors = np.ones(files, dtype=bool)
        for codes, m, dtypes in zip(self.file_codes, maps, self.dtypes, strict=True):
            needs_hdf5 |= codes == THROUGH_HDF5
            contiguous &= codes == CONTIGUOUS_ROWS
            tensors &= np.array([tensor_ready(d) for d in dtypes], dtype=bool)[m.spec_ids]
        #: Per file: some key goes through HDF5 (the file needs an HDF5 handle).
        self.needs_hdf5 = needs_hdf5
        #: Per file: every key is contiguous / every key's rows are tensors as read.
        self.contiguous = contiguous & ~needs_hdf5
        self.tensors = tensors
        #: What ds[i] looks up per key, as ints: spec numbers (None: one spec), offsets.
        self.single = [
            (
                _ints(m.spec_ids) if len(m.specs) > 1 else None,
                _ints(m.positions),
                shapes,
                dtypes,
            )
            for m, shapes, dtypes in zip(maps, self.row_shapes, self.dtypes, strict=True)
        ]


def _ints(values: npt.NDArray[Any]) -> array.array[int]:
    """An ``array.array`` of int64: items read as Python ints, 8 bytes each."""
    return array.array("q", np.ascontiguousarray(values, dtype=np.int64).tobytes())


def kind_codes(kinds: list[str], geometries: list[ChunkGeometry | None]) -> IntArray:
    """Each spec's way through the file table, as a code."""
    codes = []
    for kind, geometry in zip(kinds, geometries, strict=True):
        if kind == CONTIGUOUS:
            codes.append(CONTIGUOUS_ROWS)
        elif kind == CHUNKED:
            assert geometry is not None
            codes.append(WHOLE_CHUNKS if geometry.whole_rows else PARTIAL_CHUNKS)
        else:
            codes.append(THROUGH_HDF5)
    return np.array(codes, dtype=np.int8)


def effective_kind(spec: KeySpec, plain_descriptor: bool) -> str:
    """The spec's kind, demoted to HDF5 when this process lacks one of its decoders,
    or when the pool's driver gives no plain descriptor (an index cached under
    another driver must not make a reader pread nothing)."""
    if spec.kind != HDF5 and not plain_descriptor:
        return HDF5
    if spec.kind == CHUNKED and decodable_reason(spec.filters):
        return HDF5
    return str(spec.kind)


def remote_files(paths: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Per file: a URL.  One look at the common root when it settles it (a
    corpus under ``s3://bucket/`` or ``/data``), else one per path."""
    root = getattr(paths, "root", "")
    if is_url(root):
        return np.ones(len(paths), dtype=bool)
    if root.startswith("/") or (root and "://" not in root and ":" not in root):
        return np.zeros(len(paths), dtype=bool)
    return np.array([is_url(path) for path in paths], dtype=bool)

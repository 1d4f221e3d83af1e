"""Decoding HDF5 chunks outside libhdf5: undo a filter pipeline on raw chunk bytes.

Why: libhdf5 decompresses one chunk at a time while holding h5py's global lock,
and re-reads a chunk for every hyperslab that touches it.  zlib, zstd and blosc
called from Python release the GIL, so chunks decode in parallel threads, and
each chunk is decoded once per batch.

Filters are undone in reverse order of the pipeline, skipping those whose bit
is set in the chunk's filter mask (HDF5 sets it when an optional filter failed
on that chunk, or for partial edge chunks written unfiltered).  A pipeline with
any filter this module cannot undo exactly is read through HDF5 instead; see
:func:`decodable_reason`.

Deflate uses ISA-L (``isal``) or zlib-ng when installed, else zlib through
the compiled kernel (:mod:`h5pool.hdf5.kernel`), which also unshuffles; zstd,
blosc and HDF5's LZ4 use numcodecs (``pip install "h5pool[codecs]"``),
LZF uses python-lzf.  Bitshuffle is left to HDF5.
"""

from __future__ import annotations

import importlib
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool.hdf5.kernel import PlanReadError, decode_chunks, pipeline_positions, unshuffle_into
from h5pool.hdf5.kernel import inflate as kernel_inflate
from h5pool.hdf5.kernel import unshuffle as kernel_unshuffle

FilterPipeline = Sequence[tuple[int, Sequence[int]]]
Decoder = Callable[[bytes, Sequence[int], int], Any]

DEFLATE, SHUFFLE, FLETCHER32, LZF, BLOSC, LZ4, ZSTD = 1, 2, 3, 32000, 32001, 32004, 32015


def _inflater() -> tuple[str, Callable[[Any, int], Any]]:
    """The fastest installed deflate for chunks decoded one at a time: ISA-L,
    zlib-ng, else the kernel's zlib.

    ISA-L inflated a 32 KiB chunk in 11 µs against zlib's 15-17 µs here, and
    both release the GIL (2 threads ran 1.9x and 1.76x one).  Batches of
    deflate and shuffle chunks go to the kernel's ``decode_chunks`` instead:
    a whole share per C call beat ISA-L called chunk by chunk from Python
    (190k against 150k rows/s, one thread).
    """
    for module_name in ("isal.isal_zlib", "zlib_ng.zlib_ng"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module_name.split(".")[0], _with_size(module.decompress)
    return "zlib", kernel_inflate


def _with_size(decompress: Callable[..., Any]) -> Callable[[Any, int], Any]:
    return lambda data, nbytes: decompress(data, 15, max(nbytes, 1))


INFLATE_BACKEND, _inflate = _inflater()


def inflate(data: bytes, params: Sequence[int], nbytes: int) -> Any:
    return _inflate(data, nbytes)


def unshuffle(data: Any, params: Sequence[int], nbytes: int) -> Any:
    """Undo HDF5's byte shuffle: byte ``b`` of element ``i`` sits at ``b * count + i``.

    Bytes past the last whole element are stored as they are.  The kernel's
    unshuffle took 0.84 µs for 32 KiB (numcodecs' about 3 µs, numpy's
    transpose 9 µs), so it runs under the GIL: handing the GIL over would cost
    more than the work.
    """
    itemsize = int(params[0]) if params else 1
    if itemsize <= 1 or memoryview(data).nbytes < itemsize:
        return data
    return kernel_unshuffle(data, itemsize)


def _numcodecs(name: str) -> Decoder | None:
    try:
        codecs = importlib.import_module("numcodecs")
    except ImportError:
        return None
    if name == "zstd":
        codec = codecs.Zstd()
        return lambda data, params, nbytes: codec.decode(data)
    blosc = importlib.import_module("numcodecs.blosc")
    return lambda data, params, nbytes: blosc.decompress(data)


def _lz4() -> Decoder | None:
    """HDF5's LZ4 filter (32004, as hdf5plugin writes it): an 8-byte big-endian total
    size and 4-byte block size, then per block a 4-byte big-endian stored size and
    the block, LZ4-compressed unless it is stored at its full size."""
    try:
        lz4 = importlib.import_module("numcodecs.lz4")
    except ImportError:
        return None

    def decompress(data: bytes, params: Sequence[int], nbytes: int) -> bytes:
        view = memoryview(data)
        total, block = struct.unpack(">qi", view[:12])
        if total != nbytes or block <= 0:
            raise ValueError(f"LZ4 header says {total} bytes in blocks of {block}")
        parts, position, left = [], 12, total
        while left > 0:
            wanted = min(block, left)
            (stored,) = struct.unpack(">i", view[position : position + 4])
            payload = view[position + 4 : position + 4 + stored]
            if stored == wanted:
                parts.append(bytes(payload))
            else:  # numcodecs' LZ4 frames carry the decoded size, little-endian
                parts.append(bytes(lz4.decompress(struct.pack("<i", wanted) + bytes(payload))))
            position += 4 + stored
            left -= wanted
        return b"".join(parts)

    return decompress


def _lzf() -> Decoder | None:
    try:
        lzf = importlib.import_module("lzf")
    except ImportError:
        return None

    def decompress(data: bytes, params: Sequence[int], nbytes: int) -> bytes:
        out = lzf.decompress(bytes(data), nbytes)
        if out is None:
            raise ValueError("LZF data does not decompress to the chunk's size")
        return bytes(out)

    return decompress


_DECODERS: dict[int, Decoder | None] = {DEFLATE: inflate, SHUFFLE: unshuffle}
_OPTIONAL: dict[int, tuple[str, Callable[[], Decoder | None]]] = {
    ZSTD: ("numcodecs (pip install 'h5pool[codecs]')", lambda: _numcodecs("zstd")),
    BLOSC: ("numcodecs (pip install 'h5pool[codecs]')", lambda: _numcodecs("blosc")),
    LZF: ("python-lzf (pip install 'h5pool[codecs]')", _lzf),
    LZ4: ("numcodecs (pip install 'h5pool[codecs]')", _lz4),
}
_WHY_NOT = {
    FLETCHER32: "fletcher32 checksums are verified by HDF5",
    4: "szip is decoded by HDF5",
    5: "nbit packing is undone by HDF5",
    6: "scaleoffset is undone by HDF5",
}


def decoder(filter_id: int) -> Decoder | None:
    if filter_id not in _DECODERS and filter_id in _OPTIONAL:
        _DECODERS[filter_id] = _OPTIONAL[filter_id][1]()
    return _DECODERS.get(filter_id)


def decodable_reason(filters: FilterPipeline) -> str:
    """Empty when h5pool can undo every filter of ``filters``, else why not."""
    for filter_id, _ in filters:
        if decoder(filter_id) is not None:
            continue
        if filter_id in _WHY_NOT:
            return _WHY_NOT[filter_id]
        if filter_id in _OPTIONAL:
            return f"filter {filter_id} needs {_OPTIONAL[filter_id][0]}"
        return f"no decoder for filter {filter_id} in h5pool"
    return ""


def decode_chunk(raw: bytes, filters: FilterPipeline, mask: int, nbytes: int) -> Any:
    """The chunk's bytes with every filter not masked out undone, last filter first.

    Every step either releases the GIL (inflate, zstd, blosc) or takes less
    time than handing it over would (the kernel's unshuffle), so threads decode
    chunks side by side.
    Raises ``ValueError`` when the result is not ``nbytes`` long (a corrupt chunk).
    """
    data: Any = raw
    for position in range(len(filters) - 1, -1, -1):
        if mask & (1 << position):
            continue
        filter_id, params = filters[position]
        undo = decoder(filter_id)
        if undo is None:
            raise ValueError(decodable_reason([filters[position]]))
        data = undo(data, params, nbytes)
    size = memoryview(data).nbytes
    if size != nbytes:
        raise ValueError(f"chunk decodes to {size} bytes, expected {nbytes}")
    return data


def decode_deflate_chunks(
    fds: npt.NDArray[np.int64],
    table: npt.NDArray[np.int64],
    limits: npt.NDArray[np.int64],
    outs: list[npt.NDArray[Any]],
    filters: FilterPipeline,
) -> None:
    """Chunks of a deflate (and shuffle) pipeline into ``outs``, raising
    :class:`~h5pool.hdf5.kernel.PlanReadError` at the first bad one.

    With ISA-L or zlib-ng installed, a lean loop calls them (3 calls a chunk,
    the unshuffle in the kernel); else the kernel's zlib decodes the whole list
    in one C call.  Both release the GIL.  ISA-L inflated these chunks in
    37 µs against zlib's 56 (synthetic float rows), which outweighs the loop.
    """
    pipeline = tuple((int(f), tuple(int(v) for v in p)) for f, p in filters)
    if INFLATE_BACKEND == "zlib":
        decode_chunks(fds, table, limits, outs, pipeline)
        return
    deflate_at, shuffle_at, itemsize = pipeline_positions(pipeline)
    rows = zip(fds.tolist(), table.tolist(), limits.tolist(), outs, strict=True)
    for position, (fd, (offset, size, mask), limit, out) in enumerate(rows):
        try:
            if offset < 0 or size < 0 or offset + size > limit:
                raise ValueError("the chunk's bytes lie outside the file (damaged index or file?)")
            data: Any = os.pread(fd, size, offset)
            if len(data) != size:
                raise ValueError("short read: the file ends before the chunk (truncated?)")
            if deflate_at >= 0 and not mask >> deflate_at & 1:
                data = _inflate(data, out.nbytes)
            if memoryview(data).nbytes != out.nbytes:
                raise ValueError("the chunk does not decode to the chunk's size (damaged chunk?)")
            target = out.reshape(-1).view(np.uint8)
            if shuffle_at >= 0 and not mask >> shuffle_at & 1 and itemsize > 1:
                unshuffle_into(data, target, itemsize)
            else:
                target[...] = np.frombuffer(data, dtype=np.uint8)
        except Exception as exc:
            raise PlanReadError(
                f"chunk at byte {offset:,}: {exc}", position=position, code=0
            ) from exc

"""A batch's rows of remote objects, through byte maps and aligned blocks.

Why apart from the local plan: a remote read is one round trip per request,
so the plan first gathers every byte range the batch needs, for every key
(rows of contiguous keys, stored chunks of chunked ones), and fetches their
blocks in one concurrent call (:class:`~h5pool.read.remote_blocks.BlockCache`);
then rows are cut out of the blocks and chunks decoded by the same code as
local files.  The Python that cuts rows runs per row, next to a round trip of
milliseconds per block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.hdf5.byte_map import KeyMaps
from h5pool.hdf5.chunks import ChunkGeometry, DecodedChunks, decode_raw_chunk
from h5pool.hdf5.kernel import gather_rows
from h5pool.read.key_kinds import CONTIGUOUS_ROWS, KeyKinds
from h5pool.read.plan import KEY_SLOTS
from h5pool.read.remote_blocks import BlockCache

#: ``on_error(key number, plan position, error)``: the error to raise.
OnError = Callable[[int, int, Exception], Exception]


@dataclass(frozen=True)
class RemoteRows:
    """Rows ``rows`` of remote files ``file_numbers`` (``urls[f]`` is file ``f``'s
    URL), of the keys of ``maps``; ``outputs`` hold a row of each key (and
    receive them when read)."""

    urls: Mapping[int, str]
    file_numbers: IntArray
    rows: IntArray
    maps: list[KeyMaps]
    kinds: KeyKinds
    decoded: DecodedChunks
    outputs: list[npt.NDArray[Any]]


def read_by_blocks(
    cache: BlockCache, wanted: RemoteRows, slots: IntArray, on_error: OnError
) -> None:
    """The rows of ``wanted`` into ``wanted.outputs[k][slots]``."""
    wants, ranges = _plan(wanted)
    blocks = cache.fetch(ranges)
    geometry, urls, decoded = wanted.kinds.geometry, wanted.urls, wanted.decoded
    for number, (parts, out) in enumerate(zip(wants, wanted.outputs, strict=True)):
        for part in parts:
            where = slots[part[1]]
            try:
                if part[0] == "rows":
                    _cut_rows(cache, blocks, part[2:], out, where)
                else:
                    _decode_and_gather(cache, blocks, part[2:], geometry[number], urls,
                                       decoded, out, where)  # fmt: skip
            except _AtPosition as failure:
                raise on_error(
                    number, int(part[1][failure.position]), failure.error
                ) from failure.error


def prefetch_by_blocks(cache: BlockCache, wanted: RemoteRows) -> int:
    """Send the requests for the blocks the rows of ``wanted`` will need, without
    waiting.  Returns how many blocks were asked for."""
    _, ranges = _plan(wanted)
    return cache.prefetch(ranges)


def _plan(wanted: RemoteRows) -> tuple[list[list[Any]], list[tuple[str, int, int]]]:
    """What each key reads (rows, or chunks not decoded yet), and the byte ranges."""
    urls, file_numbers, rows = wanted.urls, wanted.file_numbers, wanted.rows
    maps, kinds, decoded, outputs = wanted.maps, wanted.kinds, wanted.decoded, wanted.outputs
    wants: list[list[Any]] = []
    ranges: list[tuple[str, int, int]] = []
    for number, (key_maps, out) in enumerate(zip(maps, outputs, strict=True)):
        contiguous = kinds.file_codes[number][file_numbers] == CONTIGUOUS_ROWS
        parts: list[Any] = []
        if contiguous.any():
            chosen = np.flatnonzero(contiguous)
            files = file_numbers[chosen]
            row_bytes = out.strides[0] if out.ndim else out.itemsize
            offsets = (key_maps.positions[files] + rows[chosen] * row_bytes).tolist()
            located = [urls[f] for f in files.tolist()]
            ranges.extend(
                (url, offset, row_bytes) for url, offset in zip(located, offsets, strict=True)
            )
            parts.append(("rows", chosen, located, offsets, row_bytes))
        if not contiguous.all():
            chosen = np.flatnonzero(~contiguous)
            files, chunk_of = file_numbers[chosen], rows[chosen]
            spec_ids = key_maps.spec_ids[files]
            first_axis = kinds.first_axes[number][spec_ids]
            chunk_rows = chunk_of // first_axis
            ids = key_maps.positions[files] + chunk_rows
            unique, first_use, inverse = np.unique(ids, return_index=True, return_inverse=True)
            keys = (unique * KEY_SLOTS + number).tolist()
            chunks: list[Any] = [decoded.get(key) for key in keys]
            table = key_maps.chunks[unique]
            owners = files[first_use].tolist()
            for u, chunk in enumerate(chunks):
                offset, size, _ = table[u].tolist()
                if chunk is None and offset >= 0:
                    ranges.append((urls[owners[u]], offset, size))
            local = chunk_of - chunk_rows * first_axis
            parts.append(("chunks", chosen, chunks, keys, table, owners, spec_ids[first_use],
                          inverse, local, first_use))  # fmt: skip
        wants.append(parts)
    return wants, ranges


class _AtPosition(Exception):
    def __init__(self, position: int, error: Exception) -> None:
        super().__init__(str(error))
        self.position, self.error = position, error


def _cut_rows(
    cache: BlockCache, blocks: Any, want: Any, out: npt.NDArray[Any], slots: IntArray
) -> None:
    located, offsets, row_bytes = want
    if not out.nbytes:
        return
    flat = out.reshape(len(out), -1).view(np.uint8) if out.ndim > 1 else out.view(np.uint8)
    target = flat.reshape(len(out), row_bytes)
    for position, (url, offset, slot) in enumerate(
        zip(located, offsets, slots.tolist(), strict=True)
    ):
        try:
            target[slot] = np.frombuffer(cache.read(blocks, url, offset, row_bytes), np.uint8)
        except Exception as exc:
            raise _AtPosition(position, exc) from exc


def _decode_and_gather(
    cache: BlockCache,
    blocks: Any,
    want: Any,
    geometries: list[ChunkGeometry | None],
    urls: Mapping[int, str],
    decoded: DecodedChunks,
    out: npt.NDArray[Any],
    slots: IntArray,
) -> None:
    chunks, keys, table, owners, specs, inverse, local, first_use = want
    for u, chunk in enumerate(chunks):
        if chunk is not None:
            continue
        geometry = geometries[int(specs[u])]
        assert geometry is not None
        offset, size, mask = table[u].tolist()
        try:
            stored = (
                None if offset < 0 else (cache.read(blocks, urls[owners[u]], offset, size), mask)
            )
            chunks[u] = decode_raw_chunk(stored, geometry)
        except Exception as exc:
            raise _AtPosition(int(first_use[u]), exc) from exc
        decoded.put(keys[u], chunks[u])
    if out.nbytes:
        gather_rows(chunks, inverse, local, out, slots)

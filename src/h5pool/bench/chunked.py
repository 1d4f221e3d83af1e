"""Benchmarks of whole-batch reads: h5pool's engine against h5py and the floor.

Three readers of the same batches, in one run:

* **best h5py recipe** — each file opened once and kept, a cached ``Dataset``,
  ``d[sorted unique rows]`` per file per batch, HDF5's chunk cache doing its
  work (the fastest way people read such corpora by hand);
* **floor** — ``pread`` of each chunk's bytes, ``zlib.decompress`` and a numpy
  unshuffle, each chunk decoded once and kept in a 64 MiB cache, one thread, no
  Python per sample (and no batch assembled: a floor below any real reader);
* **h5pool** — ``read_batch`` (one thread, then several), and a ``ds[i]`` loop.
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import cachetools
import h5py
import numpy as np

from h5pool._typing import IntArray
from h5pool.bench.common import Corpus, Result
from h5pool.dataset import PooledH5Dataset
from h5pool.hdf5.byte_map import CHUNKED, map_dataset
from h5pool.hdf5.decode import DEFLATE, SHUFFLE, decode_chunk
from h5pool.loading.sampler import BlockShuffleSampler

FLOOR_CACHE_BYTES = 64 << 20


@dataclass
class ChunkedFigures:
    """Samples per second of each reader over the same batches."""

    samples: int
    h5py_recipe: float
    floor: float
    read_batch_1: float
    read_batch_n: float
    threads: int
    getitem_loop: float


def block_batches(ds: PooledH5Dataset, batch: int, limit: int, seed: int = 0) -> list[IntArray]:
    """Batches of block order (the order h5pool is meant to be read in)."""
    order = BlockShuffleSampler(ds, seed=seed).rank_indices()[:limit]
    return [order[i : i + batch] for i in range(0, len(order), batch)]


def h5py_recipe(ds: PooledH5Dataset, key: str, batches: Sequence[IntArray]) -> float:
    """Seconds for the best hand-written h5py reader; files opened once and kept."""
    handles: dict[int, h5py.Dataset] = {}
    files: list[h5py.File] = []
    start = time.perf_counter()
    try:
        for batch in batches:
            numbers, rows = ds.index.locate_many(batch)
            for number in np.unique(numbers).tolist():
                dataset = handles.get(number)
                if dataset is None:
                    files.append(h5py.File(ds.files[number], "r"))
                    dataset = handles[number] = files[-1][key]
                wanted = np.unique(rows[numbers == number])
                dataset[wanted]
        return time.perf_counter() - start
    finally:
        for f in files:
            f.close()


def floor(ds: PooledH5Dataset, key: str, batches: Sequence[IntArray]) -> float:
    """Seconds for the floor: pread + decode of each needed chunk once, cached, one thread."""
    maps = []
    for path in ds.files:
        with h5py.File(path, "r") as f:
            file_map = map_dataset(f[key], path)
        if file_map.spec.kind != CHUNKED:
            raise ValueError(f"{path}: {key!r} is not chunked through a byte map")
        maps.append(file_map)
    chunk_rows = maps[0].spec.chunk_shape[0]
    nbytes = int(np.prod(maps[0].spec.chunk_shape)) * maps[0].spec.numpy_dtype.itemsize
    cache: cachetools.LRUCache[tuple[int, int], bytes] = cachetools.LRUCache(
        FLOOR_CACHE_BYTES, getsizeof=len
    )
    descriptors: dict[int, int] = {}
    start = time.perf_counter()
    try:
        for batch in batches:
            numbers, rows = ds.index.locate_many(batch)
            pairs = zip(numbers.tolist(), (rows // chunk_rows).tolist(), strict=True)
            for number, chunk in set(pairs):
                if (number, chunk) in cache:
                    continue
                fd = descriptors.get(number)
                if fd is None:
                    fd = descriptors[number] = os.open(ds.files[number], os.O_RDONLY)
                offset, size, mask = (int(v) for v in maps[number].chunks[chunk])
                raw = os.pread(fd, size, offset)
                cache[number, chunk] = zlib_and_numpy(raw, maps[number].spec.filters, mask, nbytes)
        return time.perf_counter() - start
    finally:
        for fd in descriptors.values():
            os.close(fd)


def zlib_and_numpy(
    raw: bytes, filters: Sequence[tuple[int, Sequence[int]]], mask: int, nbytes: int
) -> bytes:
    """The floor's decoder, as a user writes it: ``zlib.decompress`` and a numpy
    unshuffle (the pipeline's filters undone last first, masked ones skipped)."""
    data = raw
    for position in range(len(filters) - 1, -1, -1):
        if mask & (1 << position):
            continue
        filter_id, params = filters[position]
        if filter_id == DEFLATE:
            data = zlib.decompress(data)
        elif filter_id == SHUFFLE:
            size = int(params[0]) if params else 1
            count = len(data) // size
            planes = np.frombuffer(data, np.uint8, count * size).reshape(size, count)
            data = planes.T.tobytes() + data[count * size :]
        else:
            data = decode_chunk(data, [filters[position]], 0, nbytes)
    return bytes(data)


def timed_read_batch(ds: PooledH5Dataset, batches: Sequence[IntArray]) -> float:
    ds.pool.close()
    ds.reset_engine()  # a cold decoded-chunk cache, as the other readers start with
    start = time.perf_counter()
    for batch in batches:
        ds.read_batch(batch)
    return time.perf_counter() - start


def timed_getitem(ds: PooledH5Dataset, batches: Sequence[IntArray]) -> float:
    ds.pool.close()
    ds.reset_engine()
    start = time.perf_counter()
    for batch in batches:
        for index in batch.tolist():
            ds[index]
    return time.perf_counter() - start


def measure(
    files: Sequence[str],
    key: str,
    *,
    batch: int = 64,
    samples: int = 20000,
    threads: int = 2,
    max_open: int = 64,
) -> ChunkedFigures:
    """Every reader over the same block-order batches of ``files``, in one run."""
    one = PooledH5Dataset(files, key, max_open=max_open, num_threads=1)
    many = PooledH5Dataset(files, key, max_open=max_open, num_threads=threads)
    batches = block_batches(one, batch, samples)
    count = sum(len(b) for b in batches)
    rate = {
        "recipe": count / h5py_recipe(one, key, batches),
        "floor": count / floor(one, key, batches),
        "one": count / timed_read_batch(one, batches),
        "many": count / timed_read_batch(many, batches),
        "loop": count / timed_getitem(one, batches),
    }
    return ChunkedFigures(
        count, rate["recipe"], rate["floor"], rate["one"], rate["many"], threads, rate["loop"]
    )


# -- rows of `h5pool bench` ------------------------------------------------------------------


def pooled_read_batch(corpus: Corpus) -> Result:
    """``read_batch`` over block order: stacked tensors, no per-sample dicts."""
    batches = corpus.batches()
    dataset = corpus.dataset
    dataset.pool.close()
    dataset.pool = dataset.pool.empty_copy()
    dataset.reset_engine()
    seconds = timed_read_batch(dataset, batches)
    stats = dataset.pool.stats()
    dataset.pool.close()
    note = f"pool {stats.max_open}, {stats.hdf5_opens} HDF5 opens, {stats.raw_opens} os.open"
    count = sum(len(b) for b in batches)
    blocks = dataset.engine.remote_blocks
    if blocks is not None and blocks.requests:  # objects read as blocks
        note += (
            f", {blocks.requests / max(count, 1):.3f} requests/sample, "
            f"peak {blocks.peak_in_flight} in flight"
        )
    return Result("pooled-read-batch", count, seconds, peak_open=stats.peak_open_files, note=note)


def h5py_kept_open(corpus: Corpus) -> Result:
    """The best hand-written h5py reader of the same batches (files kept open)."""
    batches = corpus.batches()
    files = len(np.unique(corpus.dataset.index.locate_many(np.concatenate(batches))[0]))
    try:
        seconds = h5py_recipe(corpus.dataset, corpus.config.key, batches)
    except OSError as exc:
        if exc.errno != errno.EMFILE and "Too many open files" not in str(exc):
            raise
        return Result("h5py-kept-open", 0, None, note=f"EMFILE: keeps all {files:,} files open")
    note = "d[sorted rows] per file per batch, HDF5 chunk cache"
    return Result("h5py-kept-open", sum(len(b) for b in batches), seconds, files, note)


def raw_decode(corpus: Corpus) -> Result:
    """The floor of chunked data: pread + decode of each needed chunk once, cached."""
    batches = corpus.batches()
    try:
        seconds = floor(corpus.dataset, corpus.config.key, batches)
    except ValueError:
        return Result("raw-decode", 0, None, note="n/a: not chunked through a byte map")
    note = "pread + decode each chunk once, 64 MiB cache, 1 thread"
    return Result("raw-decode", sum(len(b) for b in batches), seconds, note=note)

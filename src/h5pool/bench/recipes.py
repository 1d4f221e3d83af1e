"""The strategies of ``h5pool bench`` that read one sample at a time: the naive
recipes people write by hand, h5pool's ``ds[i]`` and ``__getitems__``, and the
``raw-pread`` floor."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import time

import h5py
import numpy as np

from h5pool._typing import IntArray
from h5pool.bench.common import Corpus, Result
from h5pool.hdf5.readers import direct_offset
from h5pool.pool.remote import is_url, open_hdf5

# -- the naive recipes ---------------------------------------------------------------------


def open_per_sample(corpus: Corpus) -> Result:
    key = corpus.config.key
    located = corpus.located(corpus.random_order)
    start = time.perf_counter()
    filesystems = corpus.dataset.pool.filesystems
    for path, row in located:
        with open_hdf5(path, filesystems) as f:
            f[key][row]
    return Result("open-per-sample", len(located), time.perf_counter() - start, peak_open=1)


def open_all(corpus: Corpus) -> Result:
    """Every file opened once and kept: the lazy-loading recipe of most tutorials."""
    key = corpus.config.key
    handles: dict[str, h5py.File] = {}
    opened = contextlib.ExitStack()
    filesystems = corpus.dataset.pool.filesystems
    try:
        opening = time.perf_counter()
        for number, path in enumerate(corpus.files):
            try:
                handles[path] = opened.enter_context(open_hdf5(path, filesystems))
            except OSError as exc:
                if exc.errno != errno.EMFILE and "Too many open files" not in str(exc):
                    raise
                soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
                return Result(
                    "open-all",
                    0,
                    None,
                    peak_open=len(handles),
                    note=f"EMFILE at file {number + 1:,} of {len(corpus.files):,} "
                    f"(fd limit {soft})",
                )
        opened_in = time.perf_counter() - opening
        located = corpus.located(corpus.random_order)
        start = time.perf_counter()
        for path, row in located:
            handles[path][key][row]
        seconds = time.perf_counter() - start
        return Result(
            "open-all",
            len(located),
            seconds,
            peak_open=len(handles),
            note=f"opening {len(handles):,} files took {opened_in:.1f} s",
        )
    finally:
        opened.close()


# -- h5pool ----------------------------------------------------------------------------------


def _pooled(corpus: Corpus, name: str, order: IntArray, batched: bool) -> Result:
    corpus.dataset.pool.close()
    corpus.dataset.pool = corpus.dataset.pool.empty_copy()
    return _timed_reads(corpus, name, order, batched)


def _timed_reads(corpus: Corpus, name: str, order: IntArray, batched: bool) -> Result:
    dataset = corpus.dataset
    batch = corpus.config.batch_size
    start = time.perf_counter()
    if batched:
        for first in range(0, len(order), batch):
            dataset.__getitems__(order[first : first + batch])
    else:
        for index in order.tolist():
            dataset[index]
    seconds = time.perf_counter() - start
    stats = dataset.pool.stats()
    dataset.pool.close()
    note = f"pool {stats.max_open}, hit rate {stats.hit_rate:.1%}"
    if name != "pooled-random":
        note += f", {corpus.files_per_block} files per block"
    return Result(name, len(order), seconds, peak_open=stats.peak_open_files, note=note)


def pooled_random(corpus: Corpus) -> Result:
    return _pooled(corpus, "pooled-random", corpus.random_order, batched=False)


def pooled_hit(corpus: Corpus) -> Result:
    """``ds[i]`` when the file is already open: the pool's hit path alone."""
    dataset = corpus.dataset
    window = min(len(dataset.files), corpus.config.pool_size)
    end = int(dataset.index.ends[window - 1])
    order = np.random.default_rng(corpus.config.seed).permutation(end)
    order = np.resize(order, max(len(corpus.block_order), 1))
    dataset.pool.close()
    dataset.pool = dataset.pool.empty_copy()
    for index in range(end):  # open the window's files, outside the timing
        dataset[index]
    result = _timed_reads(corpus, "pooled-hit", order, batched=False)
    result.note = f"{window} files already open"
    return result


def pooled_block(corpus: Corpus) -> Result:
    return _pooled(corpus, "pooled-block", corpus.block_order, batched=False)


def pooled_batched(corpus: Corpus) -> Result:
    return _pooled(corpus, "pooled-batched", corpus.block_order, batched=True)


def raw_pread(corpus: Corpus) -> Result:
    """The floor: ``os.pread`` of the same bytes, descriptors opened once per visit."""
    return _pread_rows(corpus, "raw-pread", opened_first=False)


def pread_loop(corpus: Corpus) -> Result:
    """A Python loop of ``os.pread``, one row at a time over the same rows, every
    file opened before the clock starts: the cost of the syscalls alone."""
    return _pread_rows(corpus, "pread-loop", opened_first=True)


def _pread_rows(corpus: Corpus, name: str, *, opened_first: bool) -> Result:
    key = corpus.config.key
    if any(is_url(path) for path in corpus.files):
        return Result(name, 0, None, note="n/a: remote files have no descriptor")
    geometry: dict[str, tuple[int, int]] = {}
    for path in corpus.files:
        with h5py.File(path, "r") as f:
            dataset = f[key]
            offset = direct_offset(dataset, path)
            if offset is None:
                return Result(name, 0, None, note=f"n/a: {key!r} is not contiguous")
            row_bytes = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
            geometry[path] = (offset, row_bytes)
    reads = [
        (path, geometry[path][0] + row * geometry[path][1], geometry[path][1])
        for path, row in corpus.located(corpus.block_order)
    ]
    cap = corpus.config.pool_size
    descriptors: dict[str, int] = {}
    distinct = {r[0] for r in reads}
    opened_first = opened_first and len(distinct) <= cap  # never more than the pool holds
    if opened_first:
        descriptors = {path: os.open(path, os.O_RDONLY) for path in distinct}
    peak = len(descriptors)
    start = time.perf_counter()
    try:
        for path, offset, size in reads:
            fd = descriptors.get(path)
            if fd is None:
                if len(descriptors) >= cap:
                    for old in descriptors.values():
                        os.close(old)
                    descriptors.clear()
                fd = descriptors[path] = os.open(path, os.O_RDONLY)
                peak = max(peak, len(descriptors))
            os.pread(fd, size, offset)
        seconds = time.perf_counter() - start
    finally:
        for fd in descriptors.values():
            os.close(fd)
    note = "files opened before timing" if opened_first else ""
    if name == "pread-loop" and not opened_first:
        note = f"{len(distinct)} files, more than the pool's {cap}: opened per visit"
    return Result(name, len(reads), seconds, peak_open=peak, note=note)

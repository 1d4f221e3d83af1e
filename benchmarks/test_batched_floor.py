"""Batched reads on a warm pool against ``os.pread`` of the same rows.

The pool holds every file read here, so this isolates the per-sample cost of
``__getitems__`` (locating, pinning, reading, building tensors) from the cost
of opening files, and compares it with the bare system call on the same bytes.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np
import pytest

from h5pool import BlockShuffleSampler, PooledH5Dataset
from h5pool.hdf5.readers import direct_offset

BATCH = 64


@pytest.fixture(scope="module")
def warm(corpus_files: list[str]) -> tuple[PooledH5Dataset, list[np.ndarray]]:
    files = corpus_files[:32]
    ds = PooledH5Dataset(files, "data", max_open=64)
    order = BlockShuffleSampler(ds, files_per_block=32, seed=1).rank_indices()
    batches = [order[i : i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]
    for batch in batches:
        ds.__getitems__(batch)  # open every file once
    return ds, batches


def test_batched_warm_pool(benchmark: Any, warm: tuple[PooledH5Dataset, list[np.ndarray]]) -> None:
    ds, batches = warm
    misses_when_warm = ds.pool.stats().misses

    def read_all() -> int:
        for batch in batches:
            ds.__getitems__(batch)
        return len(batches) * BATCH

    samples = benchmark(read_all)
    benchmark.extra_info["samples_per_round"] = samples
    benchmark.extra_info["us_per_sample"] = benchmark.stats.stats.mean / samples * 1e6
    assert ds.pool.stats().misses == misses_when_warm  # only hits while timed


def test_raw_pread_same_rows(
    benchmark: Any, warm: tuple[PooledH5Dataset, list[np.ndarray]]
) -> None:
    ds, batches = warm
    descriptors, reads = [], []

    for path in ds.files:
        with h5py.File(path, "r") as f:
            offset, row_bytes = direct_offset(f["data"]), f["data"][0].nbytes
        descriptors.append(os.open(path, os.O_RDONLY))
        reads.append((offset, row_bytes))
    plan = []
    for batch in batches:
        numbers, rows = ds.index.locate_many(batch)
        for number, row in zip(numbers.tolist(), rows.tolist(), strict=True):
            offset, row_bytes = reads[number]
            plan.append((descriptors[number], row_bytes, offset + row * row_bytes))

    def read_all() -> int:
        for fd, size, offset in plan:
            os.pread(fd, size, offset)
        return len(plan)

    try:
        samples = benchmark(read_all)
    finally:
        for fd in descriptors:
            os.close(fd)
    benchmark.extra_info["us_per_sample"] = benchmark.stats.stats.mean / samples * 1e6

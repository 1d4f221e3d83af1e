"""An epoch over 5,000 files of the default shape (64 rows x 4 KiB), pool of 64, block order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from h5pool import BlockShuffleSampler, PooledH5Dataset
from h5pool.bench import synthetic

FILES, ROWS, WIDTH = 5000, synthetic.DEFAULT_ROWS, synthetic.DEFAULT_WIDTH


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("epoch-5000")
    synthetic.make_corpus(folder, files=FILES, rows=ROWS, width=WIDTH)
    return folder


def test_epoch_5000_files_pool_64(benchmark: Any, corpus: Path) -> None:
    ds = PooledH5Dataset(corpus, "data", max_open=64)
    sampler = BlockShuffleSampler(ds, seed=0)
    order = sampler.rank_indices()

    def epoch() -> None:
        for first in range(0, len(order), 64):
            ds.__getitems__(order[first : first + 64])

    benchmark.pedantic(epoch, rounds=1, iterations=1)
    per_sample = benchmark.stats.stats.mean / len(order)
    # open-per-sample on a slice of the same order, in the same run
    located = [ds.locate(int(i)) for i in order[:3000]]
    start = time.perf_counter()
    for path, row in located:
        with h5py.File(path, "r") as f:
            f["data"][row]
    naive = (time.perf_counter() - start) / len(located)
    stats = ds.pool.stats()
    benchmark.extra_info.update(
        us_per_sample=per_sample * 1e6,
        open_per_sample_us=naive * 1e6,
        speedup_vs_open_per_sample=naive / per_sample,
        peak_open_files=stats.peak_open_files,
    )
    print(
        f"\n5,000-file epoch: {per_sample * 1e6:.1f} µs/sample, open-per-sample "
        f"{naive * 1e6:.1f} µs: {naive / per_sample:.1f}x faster; peak open {stats.peak_open_files}"
    )
    assert stats.peak_open_files <= 64
    assert np.isfinite(per_sample)

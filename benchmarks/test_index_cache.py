"""Start-up on 5,000 files: scanning every file against loading the saved index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from h5pool import PooledH5Dataset
from h5pool.bench import synthetic

FILES = 5000


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("index-5000")
    synthetic.make_corpus(folder, files=FILES, rows=8, width=4)
    return folder


@pytest.fixture(scope="module")
def timings() -> dict[str, float]:
    return {}


def test_scan_5000_files(benchmark: Any, many_files: Path, timings: dict[str, float]) -> None:
    ds = benchmark.pedantic(PooledH5Dataset, args=(many_files, "data"), rounds=3, iterations=1)
    timings["scan"] = benchmark.stats.stats.mean
    assert len(ds.files) == FILES


def test_load_cached_index_5000_files(
    benchmark: Any, many_files: Path, tmp_path: Path, timings: dict[str, float]
) -> None:
    cache = tmp_path / "index.npz"
    PooledH5Dataset(many_files, "data", index_cache=cache)  # writes the cache

    def load() -> PooledH5Dataset:
        return PooledH5Dataset(many_files, "data", index_cache=cache)

    ds = benchmark.pedantic(load, rounds=5, iterations=1)
    assert ds.pool.stats().misses == 0
    if "scan" in timings:
        speedup = timings["scan"] / benchmark.stats.stats.mean
        benchmark.extra_info["speedup_vs_scan"] = speedup
        print(f"\ncached index loads {speedup:.1f}x faster than scanning {FILES} files")

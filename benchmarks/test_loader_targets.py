"""h5pool.Loader against DataLoader, as ratios within one run.

    pytest benchmarks/test_loader_targets.py --benchmark-only -s

``H5POOL_BENCH_ENGINE_SCALE=0.25`` shrinks the corpora for a quick look.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from torch.utils.data import DataLoader

from h5pool import BlockShuffleSampler, Loader, PooledH5Dataset
from h5pool.bench import synthetic
from h5pool.bench.loaders import InMemoryRows
from targets import report, scaled

BATCH, WORKERS, SAMPLES = 64, 2, 40000


def rate(batches: Iterable[Any], key: str, limit: int = SAMPLES) -> float:
    """Steady samples/s: the first batch (start-up) is not timed."""
    iterator = iter(batches)
    next(iterator)
    samples, start = 0, time.perf_counter()
    for batch in iterator:
        samples += len(batch[key])
        if samples >= limit:
            break
    seconds = time.perf_counter() - start
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
    return samples / seconds


@pytest.fixture(scope="module")
def contiguous(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return synthetic.make_corpus(tmp_path_factory.mktemp("loader-c"), scaled(2000), 32, 1024)


@pytest.fixture(scope="module")
def gzip_rows(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("loader-gz")
    return synthetic.make_corpus(folder, scaled(2000), 64, 1024, storage="gzip")


def test_loader_against_in_memory_dataloader(benchmark: Any, contiguous: list[str]) -> None:
    ds = PooledH5Dataset(contiguous, "data", max_open=64)
    threads = benchmark.pedantic(
        lambda: rate(Loader(ds, BATCH, num_threads=2), "data"), rounds=1, iterations=1
    )
    one = rate(Loader(ds, BATCH, num_threads=1), "data")
    workers = rate(Loader(ds, BATCH, num_workers=WORKERS), "data")
    rows = np.concatenate(
        [
            ds.read_batch(np.arange(i, min(i + 4096, len(ds))))["data"].numpy()
            for i in range(0, len(ds), 4096)
        ]
    )  # the same rows, all in memory: the ceiling of DataLoader's process model
    memory = InMemoryRows(rows, "data")
    sampler = np.random.default_rng(0).permutation(len(memory)).tolist()
    ceiling = rate(
        DataLoader(memory, batch_size=BATCH, sampler=sampler, num_workers=WORKERS),
        "data",
        limit=min(SAMPLES, len(memory) - BATCH),
    )
    report(
        benchmark,
        f"contiguous, {len(ds.files)} files x 32 rows x 4 KiB, batches of 64 (samples/s)",
        {
            "Loader(num_threads=2)": threads,
            "Loader(num_threads=1)": one,
            "Loader(num_workers=2)": workers,
            "DataLoader(num_workers=2) over rows in memory": ceiling,
            "Loader threads vs in-memory DataLoader (x)": threads / ceiling,
            "Loader workers vs in-memory DataLoader (x)": workers / ceiling,
        },
    )


def test_loader_against_dataloader_on_gzip(benchmark: Any, gzip_rows: list[str]) -> None:
    ds = PooledH5Dataset(gzip_rows, "data", max_open=64)
    threads = benchmark.pedantic(
        lambda: rate(Loader(ds, BATCH, num_threads=2), "data"), rounds=1, iterations=1
    )
    ds.pool.close()
    sampler = BlockShuffleSampler(ds, seed=0, batch_size=BATCH, num_workers=WORKERS)
    baseline = rate(DataLoader(ds, batch_size=BATCH, sampler=sampler, num_workers=WORKERS), "data")
    report(
        benchmark,
        "gzip 4 + shuffle rows, chunks (8, 1024), batches of 64 (samples/s)",
        {
            "Loader(num_threads=2)": threads,
            "DataLoader(num_workers=2) + BlockShuffleSampler": baseline,
            "Loader vs DataLoader (x)": threads / baseline,
        },
    )

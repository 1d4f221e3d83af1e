"""The read engine's targets, each measured as a ratio within one run.

    pytest benchmarks/test_engine_targets.py --benchmark-only -s

Corpus sizes follow the issue (2,000 files for the row corpora, 500 image
files); ``H5POOL_BENCH_ENGINE_SCALE=0.25`` shrinks every corpus for a quick look.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from h5pool import PooledH5Dataset
from h5pool.bench import chunked, synthetic
from h5pool.hdf5.byte_map import map_dataset
from targets import report, scaled

BATCH = 64


@pytest.fixture(scope="module")
def contiguous(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return synthetic.make_corpus(tmp_path_factory.mktemp("contiguous"), scaled(2000), 32, 1024)


@pytest.fixture(scope="module")
def gzip_rows(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("gzip")
    return synthetic.make_corpus(folder, scaled(2000), 64, 1024, storage="gzip")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    return synthetic.make_corpus(folder, scaled(500), 64, storage="images")


def raw_pread_with_opens(ds: PooledH5Dataset, order: np.ndarray, cap: int) -> float:
    """Seconds for ``os.pread`` of the same rows, descriptors opened per file visit."""
    with h5py.File(ds.files[0], "r") as f:
        row_bytes = f["data"][0].nbytes
    offsets = [int(map_dataset_offset(path)) for path in ds.files]
    numbers, rows = ds.index.locate_many(order)
    descriptors: dict[int, int] = {}
    start = time.perf_counter()
    for number, row in zip(numbers.tolist(), rows.tolist(), strict=True):
        fd = descriptors.get(number)
        if fd is None:
            if len(descriptors) >= cap:
                for old in descriptors.values():
                    os.close(old)
                descriptors.clear()
            fd = descriptors[number] = os.open(ds.files[number], os.O_RDONLY)
        os.pread(fd, row_bytes, offsets[number] + row * row_bytes)
    seconds = time.perf_counter() - start
    for fd in descriptors.values():
        os.close(fd)
    return seconds


def map_dataset_offset(path: str) -> int:
    with h5py.File(path, "r") as f:
        return map_dataset(f["data"], path).offset


def open_per_sample(ds: PooledH5Dataset, order: np.ndarray) -> float:
    located = [ds.locate(int(i)) for i in order]
    start = time.perf_counter()
    for path, row in located:
        with h5py.File(path, "r") as f:
            f["data"][row]
    return time.perf_counter() - start


def test_contiguous_batches_and_random_access(benchmark: Any, contiguous: list[str]) -> None:
    ds = PooledH5Dataset(contiguous, "data", max_open=64, num_threads=1)
    batches = chunked.block_batches(ds, BATCH, len(ds))
    order = np.concatenate(batches)

    def epoch() -> float:
        ds.pool.close()
        start = time.perf_counter()
        for batch in batches:
            ds.read_batch(batch)
        return time.perf_counter() - start

    ours = benchmark.pedantic(epoch, rounds=1, iterations=1)
    floor = raw_pread_with_opens(ds, order, 64)
    random_order = np.random.default_rng(0).permutation(len(ds))[:4000]
    ds.pool.close()
    start = time.perf_counter()
    for index in random_order.tolist():
        ds[index]
    random_ds = time.perf_counter() - start
    naive = open_per_sample(ds, random_order)
    report(
        benchmark,
        f"contiguous, {len(ds.files)} files x 32 rows x 4 KiB, pool 64, opens counted",
        {
            "read_batch us/sample": ours / len(order) * 1e6,
            "raw pread us/sample": floor / len(order) * 1e6,
            "read_batch cost vs raw pread (x)": ours / floor,
            "random ds[i] us/sample": random_ds / len(random_order) * 1e6,
            "open-per-sample us/sample": naive / len(random_order) * 1e6,
            "random ds[i] speed-up vs open-per-sample": naive / random_ds,
        },
    )


CHUNKED_CASES = {
    "gzip_rows": ("data", 40000, "gzip 4 + shuffle, chunks (8, 1024), block order"),
    "images": ("image", 10000, "images (64,64,3) uint8, one per gzip chunk"),
}


@pytest.mark.parametrize("corpus", list(CHUNKED_CASES))
def test_chunked_against_h5py_and_floor(
    benchmark: Any, request: pytest.FixtureRequest, corpus: str
) -> None:
    key, samples, title = CHUNKED_CASES[corpus]
    paths = request.getfixturevalue(corpus)
    figures = benchmark.pedantic(
        chunked.measure, args=(paths, key), kwargs={"samples": samples}, rounds=1
    )
    report(benchmark, f"{title}, batches of 64", _chunked_ratios(figures))


def _chunked_ratios(figures: chunked.ChunkedFigures) -> dict[str, float]:
    return {
        "h5py recipe samples/s": figures.h5py_recipe,
        "floor (1 thread) samples/s": figures.floor,
        "read_batch 1 thread samples/s": figures.read_batch_1,
        f"read_batch {figures.threads} threads samples/s": figures.read_batch_n,
        "ds[i] loop samples/s": figures.getitem_loop,
        "read_batch vs h5py recipe (x faster)": figures.read_batch_1 / figures.h5py_recipe,
        "read_batch cost vs floor (x)": figures.floor / figures.read_batch_1,
        f"{figures.threads} threads vs floor (x faster)": figures.read_batch_n / figures.floor,
        "read_batch vs ds[i] loop (x faster)": figures.read_batch_1 / figures.getitem_loop,
    }


def test_epoch_5000_files_32_rows(benchmark: Any, tmp_path: Path) -> None:
    folder = tmp_path / "epoch5000"
    synthetic.make_corpus(folder, files=scaled(5000), rows=32, width=1024)
    ds = PooledH5Dataset(folder, "data", max_open=64, num_threads=1)
    batches = chunked.block_batches(ds, BATCH, len(ds))

    def epoch() -> float:
        start = time.perf_counter()
        for batch in batches:
            ds.read_batch(batch)
        return time.perf_counter() - start

    seconds = benchmark.pedantic(epoch, rounds=1, iterations=1)
    sample = np.concatenate(batches)[:3000]
    naive = open_per_sample(ds, sample) / len(sample)
    ours = seconds / len(ds)
    report(
        benchmark,
        f"{len(ds.files)}-file epoch, 32 rows x 4 KiB, pool 64, block order",
        {
            "read_batch us/sample": ours * 1e6,
            "open-per-sample us/sample": naive * 1e6,
            "epoch speed-up vs open-per-sample": naive / ours,
            "peak open files": float(ds.pool.stats().peak_open_files),
        },
    )

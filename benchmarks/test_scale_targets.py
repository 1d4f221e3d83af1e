"""Issue 10's targets at 1k, 10k and 100k files of 100 rows (100 k files = 10 M samples).

Run: ``pytest benchmarks/test_scale_targets.py --benchmark-only -s``
(``H5POOL_BENCH_SCALE_FILES=1000,10000`` picks the sizes).  The files are copies
of one small HDF5 file, written in seconds; the scan comparison runs on at most
10,000 of them (a sequential scan of 100k files takes minutes) and is said so.
"""

from __future__ import annotations

import gc
import os
import pickle
import shutil
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from h5pool import BlockShuffleSampler, CorpusIndex, HandlePool, Loader, PooledH5Dataset
from h5pool.bench import synthetic
from targets import report

SIZES = [int(n) for n in os.environ.get("H5POOL_BENCH_SCALE_FILES", "1000,10000,100000").split(",")]
ROWS = 100
RANKS, WORKERS, BATCH = 8, 8, 64
SCAN_FILES = 10_000


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n}files")
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    files: int = request.param
    folder = tmp_path_factory.mktemp(f"scale{files}")
    template = folder / "shard_0.h5"
    synthetic.make_corpus(folder, files=1, rows=ROWS, width=2)
    made = next(folder.iterdir())
    made.rename(template)
    for number in range(1, files):
        shutil.copyfile(template, folder / f"shard_{number}.h5")
    return folder


def test_scale_targets(benchmark: Any, corpus: Path, tmp_path: Path) -> None:
    files = len(os.listdir(corpus))
    cache = tmp_path / "index.npz"
    built = time.perf_counter()
    ds = PooledH5Dataset(corpus, "data", index_cache=cache)
    build_s = time.perf_counter() - built
    figures: dict[str, float] = {
        "files": files,
        "samples": len(ds),
        "first build (scan, default processes), s": build_s,
        "scan processes used": ds.index_stats.processes,
    }

    def trusted() -> PooledH5Dataset:
        return PooledH5Dataset(corpus, "data", index_cache=cache, verify="trust")

    benchmark.pedantic(trusted, rounds=3, iterations=1)
    figures["cached start, verify='trust', s (target <= 0.5 at 100k)"] = benchmark.stats.stats.mean
    for mode in ("listing", "stat"):
        began = time.perf_counter()
        PooledH5Dataset(corpus, "data", index_cache=cache, verify=mode)  # type: ignore[arg-type]
        figures[f"cached start, verify={mode!r}, s"] = time.perf_counter() - began
    figures.update(_syscalls_of_a_trusted_start(corpus, cache, files))

    figures.update(_order_figures(ds))
    figures.update(_loader_figures(ds))
    figures.update(_index_bytes(ds, cache, files))
    report(benchmark, f"scale targets at {files:,} files / {len(ds):,} samples", figures)


def test_scan_in_processes(benchmark: Any, corpus: Path) -> None:
    """Sequential scan against 2 processes, on at most SCAN_FILES of the files."""
    paths = sorted(str(p) for p in corpus.iterdir())[:SCAN_FILES]
    timings = {}
    for processes in (1, 2):
        began = time.perf_counter()
        PooledH5Dataset(paths, "data", scan_processes=processes)
        timings[processes] = time.perf_counter() - began
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    report(
        benchmark,
        f"scan of {len(paths):,} files",
        {
            "sequential, s": timings[1],
            "2 processes, s": timings[2],
            "speed-up (target >= 1.8)": timings[1] / timings[2],
            "sequential CPU per file, ms": timings[1] / len(paths) * 1000,
        },
    )


def _syscalls_of_a_trusted_start(corpus: Path, cache: Path, files: int) -> dict[str, float]:
    """stat-like and open calls of a trusted start, counted by strace when installed."""
    if shutil.which("strace") is None:
        return {}
    script = (
        "import sys; from h5pool import PooledH5Dataset; "
        "PooledH5Dataset(sys.argv[1], 'data', index_cache=sys.argv[2], verify='trust')"
    )
    baseline = "import sys; from h5pool import PooledH5Dataset"
    counts = []
    for code in (script, baseline):
        result = subprocess.run(
            [
                "strace",
                "-f",
                "-c",
                "-e",
                "trace=%stat,%file",
                sys.executable,
                "-c",
                code,
                str(corpus),
                str(cache),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        total = [line for line in result.stderr.splitlines() if line.strip().endswith("total")]
        counts.append(int(total[-1].split()[3]) if total else 0)  # the "calls" column
    extra = counts[0] - counts[1]
    return {
        "trusted start: file syscalls beyond importing": extra,
        "trusted start: file syscalls per file (target 0)": extra / files,
    }


def _order_figures(ds: PooledH5Dataset) -> dict[str, float]:
    sampler = BlockShuffleSampler(
        ds, num_replicas=RANKS, rank=3, batch_size=BATCH, num_workers=WORKERS, seed=1
    )
    gc.collect()
    began = time.perf_counter()
    next(iter(sampler))
    first = time.perf_counter() - began  # timed without tracemalloc, which slows allocation
    tracemalloc.start()
    count = sum(1 for _ in sampler)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == len(sampler)
    return {
        "sampler first index, 8 ranks x 8 workers, ms (target <= 50)": first * 1000,
        "sampler peak memory over a rank's epoch, MB (target <= 32)": peak / 1e6,
    }


def _loader_figures(ds: PooledH5Dataset) -> dict[str, float]:
    loader = Loader(ds, BATCH, num_replicas=RANKS, rank=3, num_workers=WORKERS)
    gc.collect()
    began = time.perf_counter()
    next(loader._delivery())
    first = time.perf_counter() - began
    tracemalloc.start()
    count = sum(1 for _ in loader._delivery())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == len(loader)
    return {
        "Loader first batch of indices, 8 ranks x 8 workers, ms (target <= 50)": first * 1000,
        "Loader peak memory over a rank's epoch of indices, MB (target <= 32)": peak / 1e6,
    }


def _index_bytes(ds: PooledH5Dataset, cache: Path, files: int) -> dict[str, float]:
    pickled = pickle.dumps(ds)
    gc.collect()
    tracemalloc.start()
    copy = pickle.loads(pickled)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(copy) == len(ds)
    return {
        "index memory per worker process, B/file (target <= 100)": held / files,
        "pickle, B/file (target <= 64)": len(pickled) / files,
        "index cache on disk, B/file (target <= 64)": os.path.getsize(cache) / files,
        "index arrays, B/file": ds.index.nbytes / files,
    }


@dataclass
class _IndexOnly:
    index: CorpusIndex
    pool: HandlePool


def test_order_at_a_million_files(benchmark: Any) -> None:
    """The sampler over an index of 1 M files x 100 rows (no files behind it)."""
    files = 1_000_000
    index = CorpusIndex(
        files=[f"/corpus/shard_{i}.h5" for i in range(files)],  # type: ignore[arg-type]
        counts=np.full(files, ROWS),
        layout="rows",
        keys=("data",),
        group="/",
        sizes=np.zeros(files),
        mtimes=np.zeros(files),
    )
    figures = _order_figures(_IndexOnly(index, HandlePool(64)))  # type: ignore[arg-type]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    figures["pickle of the index, B/file"] = len(pickle.dumps(index)) / files
    report(benchmark, "order at 1,000,000 files / 100,000,000 samples (measured)", figures)

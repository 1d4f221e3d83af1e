"""The benchmark strategies: h5pool against the recipes people write by hand.

Every strategy reads the same rows of the same corpus in one run, so the
figures are comparable as ratios on a shared, noisy machine.  The
``benchmarks/`` suite and ``h5pool bench`` both call these functions.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5pool.bench_names import STRATEGIES
from h5pool.dataset import PooledH5Dataset
from h5pool.readers import direct_offset
from h5pool.remote import is_url, open_hdf5
from h5pool.sampler import BlockShuffleSampler

logger = logging.getLogger(__name__)
IntArray = npt.NDArray[np.int64]


@dataclass
class Result:
    """One strategy's figures; ``seconds`` is ``None`` when it could not run."""

    strategy: str
    samples: int
    seconds: float | None
    peak_open: int | None = None
    note: str = ""

    @property
    def us_per_sample(self) -> float | None:
        return (
            None if self.seconds is None or not self.samples else self.seconds / self.samples * 1e6
        )

    @property
    def samples_per_s(self) -> float | None:
        return None if not self.seconds else self.samples / self.seconds

    def as_dict(self) -> dict[str, Any]:
        figures = asdict(self)
        figures.update(us_per_sample=self.us_per_sample, samples_per_s=self.samples_per_s)
        return figures


@dataclass
class BenchConfig:
    """What to measure.  Slow strategies read ``slow_samples``, fast ones ``fast_samples``."""

    files: list[str]
    key: str = "data"
    pool_size: int = 64
    slow_samples: int = 2000
    fast_samples: int = 40000
    batch_size: int = 64
    loader_workers: int = 2
    seed: int = 0
    strategies: Sequence[str] = STRATEGIES
    storage_options: dict[str, Any] | None = None
    progress: Callable[[str], None] = field(default=lambda name: None)


@contextlib.contextmanager
def lowered_fd_limit(limit: int | None) -> Iterator[int]:
    """Run the body under a lower soft ``RLIMIT_NOFILE`` (the clusters' 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limit is None or limit <= 0 or limit >= soft:
        yield soft
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Corpus:
    """The rows every strategy reads, located once, outside the timings."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.dataset = PooledH5Dataset(
            config.files,
            config.key,
            max_open=config.pool_size,
            storage_options=config.storage_options,
        )
        self.files = self.dataset.files
        rng = np.random.default_rng(config.seed)
        total = len(self.dataset)
        self.random_order: IntArray = rng.permutation(total)[: config.slow_samples]
        sampler = BlockShuffleSampler(self.dataset, seed=config.seed)
        self.files_per_block = sampler.files_per_block
        self.block_order: IntArray = sampler.rank_indices()[: config.fast_samples]

    def located(self, order: IntArray) -> list[tuple[str, int]]:
        numbers, rows = self.dataset.index.locate_many(order)
        return [(self.files[n], r) for n, r in zip(numbers.tolist(), rows.tolist(), strict=True)]


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
    key = corpus.config.key
    if any(is_url(path) for path in corpus.files):
        return Result("raw-pread", 0, None, note="n/a: remote files have no descriptor")
    geometry: dict[str, tuple[int, int]] = {}
    for path in corpus.files:
        with h5py.File(path, "r") as f:
            dataset = f[key]
            offset = direct_offset(dataset)
            if offset is None:
                return Result("raw-pread", 0, None, note=f"n/a: {key!r} is not contiguous")
            row_bytes = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
            geometry[path] = (offset, row_bytes)
    reads = [
        (path, geometry[path][0] + row * geometry[path][1], geometry[path][1])
        for path, row in corpus.located(corpus.block_order)
    ]
    cap = corpus.config.pool_size
    descriptors: dict[str, int] = {}
    peak = 0
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
    return Result("raw-pread", len(reads), seconds, peak_open=peak)


RUNNERS: dict[str, Callable[[Corpus], Result]] = {
    "open-per-sample": open_per_sample,
    "open-all": open_all,
    "pooled-random": pooled_random,
    "pooled-hit": pooled_hit,
    "pooled-block": pooled_block,
    "pooled-batched": pooled_batched,
    "raw-pread": raw_pread,
}


def run(config: BenchConfig) -> list[Result]:
    """Run the chosen strategies on one corpus, in the order of ``STRATEGIES``."""
    from h5pool import bench_chunked, bench_loaders

    runners = {**RUNNERS, **bench_chunked.RUNNERS, **bench_loaders.RUNNERS}
    unknown = set(config.strategies) - set(runners)
    if unknown:
        raise ValueError(f"unknown strategies: {sorted(unknown)}; choose from {list(runners)}")
    corpus = Corpus(config)
    results = []
    for name in STRATEGIES:
        if name in config.strategies:
            config.progress(name)
            results.append(runners[name](corpus))
    return results


def ratios(results: Sequence[Result]) -> dict[str, dict[str, float | None]]:
    """Each strategy's speed-up against open-per-sample and its cost against raw-pread."""
    by_name = {r.strategy: r for r in results}

    def per_sample(name: str) -> float | None:
        result = by_name.get(name)
        return result.us_per_sample if result else None

    naive, floor, ceiling = (
        per_sample("open-per-sample"),
        per_sample("raw-pread") or per_sample("raw-decode"),
        per_sample("loader-memory"),
    )
    table: dict[str, dict[str, float | None]] = {}
    for result in results:
        cost = result.us_per_sample
        table[result.strategy] = {
            "speedup_vs_open_per_sample": naive / cost if naive and cost else None,
            "cost_vs_raw_pread": cost / floor if floor and cost else None,
            "rate_vs_in_memory": ceiling / cost if ceiling and cost else None,
        }
    return table

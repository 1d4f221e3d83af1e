"""Bench strategies that feed a training loop, and the one bench recommends.

Why apart: the other strategies time reads; these time whole epochs as a
training loop sees them (DataLoader over the pool, the in-memory ceiling,
``h5pool.Loader`` in threads or worker processes), and their start-up is
left out of the rate.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset

from h5pool.bench.common import BenchConfig, Corpus, Result
from h5pool.loading.loader import Loader
from h5pool.loading.sampler import BlockShuffleSampler

#: The ways of feeding a training loop that bench recommends between.
TRAINING_STRATEGIES = {
    "loader-threads": "h5pool.Loader(ds, batch_size, num_threads={n})",
    "loader-workers": "h5pool.Loader(ds, batch_size, num_workers={n})",
    "loader-pooled": (
        "DataLoader(ds, batch_size, sampler=BlockShuffleSampler(...), num_workers={n})"
    ),
}


class InMemoryRows(Dataset[dict[str, torch.Tensor]]):
    """The ceiling: the same rows already in memory, with the same batch interface."""

    def __init__(self, rows: npt.NDArray[Any], key: str) -> None:
        self.rows = torch.from_numpy(rows)
        self.key = key

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {self.key: self.rows[index]}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        return [{self.key: row} for row in self.rows[list(indices)].unbind(0)]


def _dataloader_rate(name: str, dataset: Dataset[Any], sampler: Any, config: BenchConfig) -> Result:
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.loader_workers,
        persistent_workers=False,
    )
    batches = iter(loader)
    next(batches)  # workers started and warm: start-up is not the steady rate
    samples = 0
    start = time.perf_counter()
    for batch in itertools.islice(batches, config.fast_samples // config.batch_size):
        samples += len(next(iter(batch.values())))
    seconds = time.perf_counter() - start
    del batches
    return Result(
        name, samples, seconds, note=f"{config.loader_workers} workers, batch {config.batch_size}"
    )


def loader_pooled(corpus: Corpus) -> Result:
    corpus.dataset.pool.close()
    sampler = BlockShuffleSampler(
        corpus.dataset,
        seed=corpus.config.seed,
        batch_size=corpus.config.batch_size,
        num_workers=corpus.config.loader_workers,
    )
    return _dataloader_rate("loader-pooled", corpus.dataset, sampler, corpus.config)


def loader_memory(corpus: Corpus) -> Result:
    needed = min(len(corpus.dataset), corpus.config.fast_samples + corpus.config.batch_size)
    order = np.sort(corpus.block_order[:needed])
    rows = np.stack([t[corpus.config.key].numpy() for t in corpus.dataset.__getitems__(order)])
    corpus.dataset.pool.close()
    memory = InMemoryRows(rows, corpus.config.key)
    sampler = np.random.default_rng(corpus.config.seed).permutation(len(memory)).tolist()
    return _dataloader_rate("loader-memory", memory, sampler, corpus.config)


def _h5pool_loader_rate(corpus: Corpus, name: str, **options: Any) -> Result:
    """Steady samples/s of an ``h5pool.Loader`` epoch (the first batch not timed)."""
    config = corpus.config
    dataset = corpus.dataset
    dataset.pool.close()
    loader = Loader(dataset, config.batch_size, seed=config.seed, **options)
    limit = max(1, config.fast_samples // config.batch_size)
    batches = iter(loader)
    next(batches)
    samples, start = 0, time.perf_counter()
    for number, batch in enumerate(batches):
        samples += len(next(iter(batch.values())))
        if number + 2 >= limit:
            break
    seconds = time.perf_counter() - start
    batches.close()
    stats = loader.stats()
    note = ", ".join(f"{k}={v}" for k, v in options.items())
    note += f", waited {stats['wait_fraction']:.0%}"
    return Result(name, samples, seconds, peak_open=stats["peak_open_files_per_process"], note=note)


def loader_threads(corpus: Corpus) -> Result:
    return _h5pool_loader_rate(corpus, "loader-threads", num_threads=corpus.config.loader_workers)


def loader_workers(corpus: Corpus) -> Result:
    return _h5pool_loader_rate(corpus, "loader-workers", num_workers=corpus.config.loader_workers)


def recommendation(results: Sequence[Result], workers: int) -> str | None:
    """The fastest way to feed a training loop measured on these files, as a line."""
    measured = [r for r in results if r.strategy in TRAINING_STRATEGIES and r.samples_per_s]
    if not measured:
        return None
    best = max(measured, key=lambda r: r.samples_per_s or 0.0)
    how = TRAINING_STRATEGIES[best.strategy].format(n=workers)
    return f"fastest measured here: {how} at {best.samples_per_s:,.0f} samples/s"

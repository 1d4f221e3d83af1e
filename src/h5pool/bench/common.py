"""What every benchmark strategy shares: the configuration, the corpus and its
orders (located once, outside the timings), and the figures one strategy gives.

Every strategy reads the same rows of the same corpus in one run, so the
figures are comparable as ratios on a shared, noisy machine.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from h5pool._typing import IntArray
from h5pool.bench.registry import STRATEGIES
from h5pool.dataset import PooledH5Dataset
from h5pool.loading.sampler import BlockShuffleSampler


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

    def batches(self) -> list[IntArray]:
        """The block order cut into batches of ``batch_size``."""
        order = self.block_order
        size = self.config.batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

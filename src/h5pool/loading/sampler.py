"""``BlockShuffleSampler``: shuffle well enough for SGD, while keeping a small pool hot.

Why: under a uniform random order over 5,000 files a pool of 64 handles hits
about 64/5,000 of the time, and every miss pays a 150-300 µs open.  This
sampler shuffles the *files*, cuts them into blocks that fit in the pool,
shuffles the *samples* within each block, and concatenates the blocks.  Every
sample still appears once per epoch in an order that changes every epoch; what
it trades away is that two samples far apart in the epoch never come from the
same small block of files.

Distributed use follows ``torch.utils.data.DistributedSampler``: ``num_replicas``
and ``rank`` default to the process group (looked up when iteration starts, so
a sampler built before ``init_process_group`` is still right), every rank
computes the same epoch stream from ``(seed, epoch)``, and each rank takes a
*contiguous* share of it, so each rank touches about ``files / ranks`` files.

It *is* a ``DistributedSampler`` (a subclass), because training frameworks
leave those alone: PyTorch Lightning, by default, wraps any other sampler in
its own distributed wrapper, which would split the corpus by rank a second
time and silently drop half of it.  For training loops, ``h5pool.Loader``
builds this order in and needs no sampler at all.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from h5pool._typing import IntArray
from h5pool.index.corpus_index import CorpusIndex
from h5pool.loading.consumers import samples_drawn_ahead, sharded_again_by_accelerate
from h5pool.loading.order import EpochOrder
from h5pool.pool.handle_pool import HandlePool

logger = logging.getLogger(__name__)


class IndexedDataset(Protocol):
    """What the sampler needs of a dataset: its index and the pool it reads through."""

    @property
    def index(self) -> CorpusIndex: ...

    @property
    def pool(self) -> HandlePool: ...


def default_files_per_block(max_open: int) -> int:
    """Half the pool: a DataLoader worker may still hold the previous block's
    files while it starts on the next one, so two blocks must fit at once."""
    return max(1, max_open // 2)


class BlockShuffleSampler(DistributedSampler[int]):
    """Locality-aware shuffling over the files of a :class:`PooledH5Dataset`.

    With ``drop_last=False`` the epoch stream is padded by repeating its first
    samples until it divides evenly among the ranks (as ``DistributedSampler``
    does), so every sample is seen and a few are seen twice.  With
    ``drop_last=True`` the tail that does not divide evenly is dropped (fewer
    than ``num_replicas`` samples), so no sample is repeated.

    Pass the DataLoader's ``batch_size`` and ``num_workers`` too: blocks are then
    dealt to workers (block ``b`` to worker ``b % num_workers``) and batches are
    ordered so that DataLoader's round-robin hands each worker only its own
    blocks, and each file is opened by one worker instead of all of them.

    Parameters
    ----------
    dataset
        The dataset (anything with a ``CorpusIndex`` as ``index`` and a ``pool``).
    files_per_block
        Files shuffled together (``None``: half the pool, so the current and
        the next block fit in every worker's pool).
    shuffle
        ``False`` keeps the natural order.
    seed
        With the epoch, fixes the order on every rank and run.
    num_replicas
        Ranks that share the epoch (``None``: from ``torch.distributed`` when
        iteration starts).
    rank
        This process's rank (``None``: likewise).
    drop_last
        Drop the tail that does not divide among ranks instead of padding it.
    batch_size
        The DataLoader's batch size, so that batches are dealt whole.
    num_workers
        The DataLoader's workers, so that each is dealt its own blocks.

    Examples
    --------
    >>> sampler = BlockShuffleSampler(ds, batch_size=64, num_workers=8)  # doctest: +SKIP
    >>> loader = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=8)  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: IndexedDataset,
        *,
        files_per_block: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        if num_replicas is not None and rank is not None:
            check_rank(num_replicas, rank)
        if files_per_block is None:
            files_per_block = default_files_per_block(dataset.pool.max_open)
        if files_per_block < 1:
            raise ValueError(f"files_per_block must be at least 1, got {files_per_block}")
        if num_workers > 1 and (batch_size is None or batch_size < 1):
            raise ValueError("num_workers > 1 needs the DataLoader's batch_size as well")
        self._dataset = dataset
        self.files_per_block = files_per_block
        self.shuffle = shuffle
        self.seed = seed
        self._replicas = ResolvedRanks(num_replicas, rank, "BlockShuffleSampler")
        self.drop_last = drop_last
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.epoch = 0
        # Samples already yielded in the current epoch, for resuming mid-epoch.
        self.yielded = 0
        self._resume_from: int | None = None
        # Samples the current consumer draws ahead of delivery (worker prefetch).
        self._drawn_ahead = 0
        self._warned_ahead = False

    @property
    def counts(self) -> IntArray:
        """Samples per file, read from the dataset's index at each use: samples
        that ``refresh()`` adds join from the next epoch."""
        return self._dataset.index.counts

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        return self._replicas.resolve()[0]

    @property
    def rank(self) -> int:  # type: ignore[override]
        return self._replicas.resolve()[1]

    @property
    def num_samples(self) -> int:  # type: ignore[override]
        total = int(self.counts.sum())
        if self.drop_last:
            return total // self.num_replicas
        return math.ceil(total / self.num_replicas)

    @property
    def total_size(self) -> int:  # type: ignore[override]
        return self.num_samples * self.num_replicas

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's order; call it before each epoch, on every rank."""
        self.epoch = epoch

    def epoch_plan(self, epoch: int | None = None) -> EpochOrder:
        """The epoch's order as arithmetic on per-file counts (O(files) memory)."""
        return EpochOrder(
            self.counts,
            self.files_per_block,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
        )

    def epoch_order(self) -> IntArray:
        """The whole epoch's stream for all ranks, before padding or dropping.

        Written out in full (O(samples)): for inspection and tests, not for training.
        """
        plan = self.epoch_plan()
        return plan.take(0, plan.total)

    def rank_chunks(self) -> Iterator[IntArray]:
        """This rank's share of the (padded or trimmed) epoch stream, a piece at a
        time, arranged for the DataLoader's workers when ``num_workers`` > 1.

        The share is the range ``[rank * num_samples, (rank + 1) * num_samples)``
        of the stream; only one block of it is laid out at a time.
        """
        plan = self.epoch_plan()
        begin = self.rank * self.num_samples
        end = begin + self.num_samples
        if self.shuffle and self.num_workers > 1 and self.batch_size:
            return plan.dealt_for_workers(begin, end, self.batch_size, self.num_workers)
        return plan.chunks(begin, end)

    def rank_indices(self) -> IntArray:
        """This rank's whole share, written out (O(samples / ranks)); iteration
        itself never builds it."""
        pieces = list(self.rank_chunks())
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        num_replicas, _ = self._replicas.resolve(announce=True)
        if num_replicas > 1 and sharded_again_by_accelerate():
            raise ValueError(
                "BlockShuffleSampler already splits the corpus by rank, and accelerate's "
                "prepare() shards this DataLoader's batches again: half the data would be lost. "
                "Pass h5pool.Loader to prepare() instead (it is left as it is), or build the "
                "sampler with num_replicas=1, rank=0 and let accelerate shard."
            )
        self._drawn_ahead = samples_drawn_ahead()
        skip = self._resume_from or 0
        self._resume_from = None
        self.yielded = skip
        for piece in self.rank_chunks():
            if skip >= len(piece):
                skip -= len(piece)
                continue
            for index in piece[skip:].tolist():
                self.yielded += 1
                yield index
            skip = 0

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "seed", "yielded"}``: where a resume continues.

        Under a plain DataLoader with workers, ``yielded`` counts what the
        workers fetched ahead, not what the loop received, and the first call
        in that case warns (once per sampler); use torchdata's
        ``StatefulDataLoader`` (or :class:`~h5pool.Loader`) to resume exactly.

        Returns
        -------
        dict
            The epoch, the seed and the samples yielded so far in the epoch.
        """
        if self._drawn_ahead and not self._warned_ahead:
            self._warned_ahead = True
            warnings.warn(
                f"BlockShuffleSampler.state_dict(): a DataLoader with workers draws up to "
                f"{self._drawn_ahead} samples ahead of the batches it has delivered, so a "
                "resume from this state skips those; use torchdata's StatefulDataLoader, "
                "which checkpoints at delivery, or h5pool.Loader and its state_dict()",
                RuntimeWarning,
                stacklevel=2,
            )
        return {"epoch": self.epoch, "seed": self.seed, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues after the samples already yielded.

        Parameters
        ----------
        state
            What :meth:`state_dict` returned.

        Raises
        ------
        ValueError
            A negative ``yielded``.
        """
        yielded = int(state["yielded"])
        if yielded < 0:
            raise ValueError(f"yielded must not be negative, got {yielded}")
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))
        self._resume_from = yielded
        self.yielded = yielded


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def check_rank(num_replicas: int, rank: int) -> None:
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")


class ResolvedRanks:
    """``(num_replicas, rank)``: as given, or from ``torch.distributed`` when asked.

    Looked up late on purpose: a sampler or loader is often built before the
    process group exists (Lightning builds dataloaders early), and a rank fixed
    at construction would then be 0 of 1 on every process.
    """

    def __init__(self, num_replicas: int | None, rank: int | None, owner: str) -> None:
        self.requested = (num_replicas, rank)
        self.owner = owner
        self._announced: tuple[int, int] | None = None

    def resolve(self, *, announce: bool = False) -> tuple[int, int]:
        num_replicas, rank = self.requested
        from_group = num_replicas is None or rank is None
        if num_replicas is None:
            num_replicas = dist.get_world_size() if _distributed() else 1
        if rank is None:
            rank = dist.get_rank() if _distributed() else 0
        check_rank(num_replicas, rank)
        if announce and from_group and _distributed() and self._announced != (num_replicas, rank):
            self._announced = (num_replicas, rank)
            logger.info(
                "h5pool: %s reads as rank %d of %d (from torch.distributed)",
                self.owner,
                rank,
                num_replicas,
            )
        return num_replicas, rank

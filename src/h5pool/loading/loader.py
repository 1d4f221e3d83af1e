"""``h5pool.Loader``: whole batches straight from the files, read ahead in threads.

Why not DataLoader: measured on 2 cores, the DataLoader's process model costs
more than reading does (passing tensors between processes, collating sample by
sample), and one reading thread beat two workers.  The Loader reads each batch
with one ``read_batch`` call (rows land straight in the batch's tensors) and
keeps ``num_threads`` batches in flight, since ``pread`` and the decoders
release the GIL.  ``num_workers > 0`` runs the same batch reads in DataLoader
worker processes instead, for transforms heavy in Python.

The order is ``BlockShuffleSampler``'s, built in: deterministic per (seed,
epoch), every sample exactly once per epoch across ranks, ranks resolved from
``torch.distributed`` when iteration starts.  The Loader is not a DataLoader,
so training frameworks (Lightning, accelerate) pass it through untouched.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from h5pool._typing import IntArray
from h5pool.dataset import PooledH5Dataset
from h5pool.loading.fetch_ahead import Prefetcher, fetching_ahead
from h5pool.loading.order import worker_stretches
from h5pool.loading.sampler import BlockShuffleSampler, ResolvedRanks
from h5pool.loading.stats import EpochStats, process_counters
from h5pool.progress import progress_bar

logger = logging.getLogger(__name__)
Batch = dict[str, Any]
BatchTransform = Callable[[Batch], Any]


class Loader:
    """An iterable of batches ``{key: tensor (B, ...)}`` over a :class:`PooledH5Dataset`.

    ``len(loader)`` is the number of batches per epoch on this rank.
    ``drop_last=False`` pads the epoch's stream by repeating its first samples
    until it divides among the ranks, and keeps a last, shorter batch;
    ``drop_last=True`` trims the stream instead and drops the shorter batch,
    so no sample repeats.  Iterating again without :meth:`set_epoch` moves to
    the next epoch.  With workers, batches arrive interleaved between the
    workers' stretches of the epoch (:meth:`epoch_batches`), so that each file
    is read by one worker.

    Parameters
    ----------
    dataset
        A "rows" dataset, or a "groups" one with ``window``.
    batch_size
        Samples per batch.
    shuffle
        Shuffle blocks of files and the samples within them (``False``: natural order).
    files_per_block
        Files shuffled together (``None``: half the pool).
    seed
        With the epoch, fixes the order on every rank and run.
    drop_last
        Trim the epoch instead of padding it, and drop the last, shorter batch.
    num_threads
        Threads that read batches ahead (``None``: the usable cores but one).
    num_workers
        DataLoader worker processes that read whole batches instead of threads.
    prefetch
        Batches in flight per thread or worker.
    fetch_ahead
        With threads, batches beyond those being read whose blocks of remote
        objects are requested already (:meth:`PooledH5Dataset.prefetch`), so
        their round trips overlap the current batches' decoding; within the
        dataset's ``max_requests_in_flight``.  Local files ignore it.
    pin_memory
        Pin batches where CUDA exists.
    transform
        ``transform(batch) -> batch``, once per batch (in the workers if any).
    num_replicas
        Ranks that share the epoch (``None``: from ``torch.distributed`` when
        iteration starts).
    rank
        This process's rank (``None``: likewise).
    multiprocessing_context
        ``"fork"``, ``"spawn"`` or ``"forkserver"`` for the workers, as
        DataLoader takes it.
    persistent_workers
        Keep the workers between epochs, as DataLoader does.
    progress
        A tqdm bar over each epoch.

    Raises
    ------
    ValueError
        The "members" layout, whole groups without ``window``, or a
        non-positive ``batch_size`` or ``prefetch``.

    Examples
    --------
    >>> loader = Loader(ds, batch_size=64)  # doctest: +SKIP
    >>> for epoch in range(10):  # doctest: +SKIP
    ...     loader.set_epoch(epoch)
    ...     for batch in loader:
    ...         train_step(batch)
    """

    def __init__(
        self,
        dataset: PooledH5Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        files_per_block: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        num_threads: int | None = None,
        num_workers: int = 0,
        prefetch: int = 2,
        fetch_ahead: int = 4,
        pin_memory: bool = False,
        transform: BatchTransform | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        multiprocessing_context: Any = None,
        persistent_workers: bool = False,
        progress: bool = False,
    ) -> None:
        if dataset.layout == "members" or (dataset.layout == "groups" and not dataset.window):
            raise ValueError(
                "Loader stacks samples of one shape: the 'rows' layout, or 'groups' with "
                "window=; use DataLoader for 'members' and whole groups"
            )
        if batch_size < 1 or prefetch < 1 or num_workers < 0 or fetch_ahead < 0:
            raise ValueError(
                "batch_size and prefetch must be at least 1, num_workers and fetch_ahead >= 0"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_threads = num_threads if num_threads is not None else default_loader_threads()
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.fetch_ahead = fetch_ahead
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.transform = transform
        self.multiprocessing_context = multiprocessing_context
        self.persistent_workers = persistent_workers and num_workers > 0
        self.progress = progress
        self.epoch = 0
        self._order = BlockShuffleSampler(
            dataset,
            files_per_block=files_per_block,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            num_replicas=1,
            rank=0,
        )
        self.files_per_block = self._order.files_per_block
        self._ranks = ResolvedRanks(num_replicas, rank, "Loader")
        self._delivered = 0
        self._resume_from: int | None = None
        self._started_epoch: int | None = None
        self._workers_loader: DataLoader[Any] | None = None
        self._stats = EpochStats()
        self._last_reports: dict[int, dict[str, int]] = {}

    # -- order ---------------------------------------------------------------------------

    @property
    def sampler(self) -> Loader:
        """Frameworks call ``loader.sampler.set_epoch(epoch)``; this is that hook."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's order; call it on every rank (Lightning does)."""
        self.epoch = epoch
        self._started_epoch = None

    def __len__(self) -> int:
        samples = self._rank_samples()
        return (
            samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)
        )

    def _rank_samples(self) -> int:
        num_replicas, _ = self._ranks.resolve()
        total = len(self.dataset)
        return total // num_replicas if self.drop_last else math.ceil(total / num_replicas)

    def _batch_reader(self, epoch: int | None = None) -> Callable[[int], IntArray]:
        """Batch ``k`` of this rank for ``epoch``, worked out on demand from the
        per-file counts: nothing of size O(samples) is ever built."""
        _, rank = self._ranks.resolve(announce=True)
        order = self._order
        plan = order.epoch_plan(self.epoch if epoch is None else epoch)
        per_rank = self._rank_samples()
        begin, end = rank * per_rank, (rank + 1) * per_rank
        size = self.batch_size

        def batch(number: int) -> IntArray:
            first = begin + number * size
            return plan.take(first, min(first + size, end))

        return batch

    def batches(self, epoch: int | None = None) -> list[IntArray]:
        """This rank's batches of sample indices for ``epoch`` (default: the current
        one), written out; iteration computes them one at a time instead."""
        batch = self._batch_reader(epoch)
        return [batch(number) for number in range(len(self))]

    def epoch_batches(self) -> list[IntArray]:
        """The batches in the order they are delivered: :meth:`batches`, or with
        workers, dealt so that each worker reads one contiguous stretch of them."""
        return list(self._delivery())

    def _delivery(self, start: int = 0) -> Iterator[IntArray]:
        """The epoch's batches in delivery order, from the ``start``-th on, lazily."""
        batch = self._batch_reader()
        for number in worker_stretches(len(self), self.num_workers)[start:].tolist():
            yield batch(number)

    # -- iteration -----------------------------------------------------------------------

    def __iter__(self) -> Generator[Batch, None, None]:
        if self._resume_from is None and self._started_epoch == self.epoch:
            self.epoch += 1  # iterating again without set_epoch: the next epoch
        self._started_epoch = self.epoch
        start = self._resume_from or 0
        self._resume_from = None
        self._delivered = start
        remaining = max(0, len(self) - start)
        batches = self._delivery(start)
        self._stats = EpochStats(self._last_reports if self.persistent_workers else None)
        stream = (
            self._from_workers(batches, remaining)
            if self.num_workers
            else self._from_threads(batches)
        )
        bar = progress_bar(self.progress, total=remaining, desc=f"epoch {self.epoch}", unit="batch")
        try:
            while True:
                waited = time.perf_counter()
                try:
                    batch = next(stream)
                except StopIteration:
                    return
                self._stats.waited(time.perf_counter() - waited)
                self._delivered += 1
                bar.update(1)
                yielded = time.perf_counter()
                yield batch
                self._stats.consumed(time.perf_counter() - yielded)
        finally:
            bar.close()
            stream.close()

    def _from_threads(self, batches: Iterator[IntArray]) -> Generator[Batch, None, None]:
        """Read batches in order, ``num_threads * prefetch`` of them in flight at most."""
        self._stats.follow_this_process(
            process_counters(self.dataset), lambda: process_counters(self.dataset)
        )
        window = max(1, self.num_threads * self.prefetch)
        executor = ThreadPoolExecutor(max(1, self.num_threads), thread_name_prefix="h5pool-loader")
        pending: collections.deque[Future[Batch]] = collections.deque()
        upcoming = iter(batches)
        if self.fetch_ahead and self.dataset.fetches_ahead:  # planned in a reading thread
            prefetcher = Prefetcher(self.dataset, executor.submit)
            upcoming = fetching_ahead(upcoming, self.fetch_ahead, prefetcher)
        try:
            for indices in upcoming:
                pending.append(executor.submit(self._read, indices))
                if len(pending) >= window:
                    break
            while pending:
                batch = pending.popleft().result()
                nxt = next(upcoming, None)
                if nxt is not None:
                    pending.append(executor.submit(self._read, nxt))
                yield batch
        finally:
            for future in pending:
                future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)

    def _read(self, indices: IntArray) -> Batch:
        batch = self.dataset.read_batch(indices)
        self._stats.count(len(indices), batch)
        if self.transform is not None:
            batch = self.transform(batch)
        if self.pin_memory:
            batch = {
                k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }
        return batch

    def _from_workers(
        self, batches: Iterator[IntArray], count: int
    ) -> Generator[Batch, None, None]:
        loader = self._workers_loader
        if loader is None or not self.persistent_workers:
            loader = DataLoader(
                BatchReader(self.dataset, self.transform),
                batch_size=None,
                sampler=_EpochBatches(),
                num_workers=self.num_workers,
                collate_fn=_identity,
                pin_memory=self.pin_memory,
                prefetch_factor=self.prefetch,
                multiprocessing_context=self.multiprocessing_context,
                persistent_workers=self.persistent_workers,
            )
            if self.persistent_workers:
                self._workers_loader = loader
        sampler = loader.sampler
        assert isinstance(sampler, _EpochBatches)
        sampler.batches = batches
        sampler.count = count
        for batch, counters, pid, samples in loader:
            self._stats.count(samples, None, counters.pop("bytes"))
            self._stats.add_process(pid, None, counters)
            self._last_reports[pid] = counters
            yield batch

    # -- state and figures ---------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        """Plain ints: the epoch, the seed, and batches delivered to the caller.

        Returns
        -------
        dict
            ``{"epoch", "seed", "batches_delivered"}``; it survives
            ``torch.load(weights_only=True)``.
        """
        return {"epoch": self.epoch, "seed": self.seed, "batches_delivered": self._delivered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues after the batches already delivered.

        Parameters
        ----------
        state
            What :meth:`state_dict` returned.

        Raises
        ------
        ValueError
            A negative ``batches_delivered``.
        """
        delivered = int(state["batches_delivered"])
        if delivered < 0:
            raise ValueError(f"batches_delivered must not be negative, got {delivered}")
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))
        self._order.seed = self.seed
        self._resume_from = delivered
        self._delivered = delivered
        self._started_epoch = None

    def stats(self) -> dict[str, Any]:
        """Figures of the current epoch, summed over threads and worker processes.

        Returns
        -------
        dict
            Samples, batches, bytes read, file opens, hits, misses, evictions,
            chunks decoded, peak open files per process, processes, samples/s
            and ``wait_fraction``: the share of the loop's time spent waiting
            for data (near 0: loading keeps up).
        """
        return self._stats.as_dict()


class BatchReader(Dataset[Any]):
    """What a worker process runs: ``read_batch`` of the indices it is handed.

    Returns the batch, the worker's cumulative counters and its PID, so the
    main process can sum what every worker did.
    """

    def __init__(self, dataset: PooledH5Dataset, transform: BatchTransform | None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __getitem__(self, indices: Any) -> tuple[Batch, dict[str, int], int, int]:
        batch = self.dataset.read_batch(indices)
        counters = process_counters(self.dataset)
        counters["bytes"] = sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor))
        if self.transform is not None:
            batch = self.transform(batch)
        return batch, counters, os.getpid(), len(indices)

    def __len__(self) -> int:
        return len(self.dataset)


class _EpochBatches:
    """The sampler of the worker DataLoader: this epoch's batches, set before each epoch."""

    def __init__(self) -> None:
        self.batches: Iterator[IntArray] = iter(())
        self.count = 0

    def __iter__(self) -> Iterator[IntArray]:
        return self.batches

    def __len__(self) -> int:
        return self.count


def _identity(item: Any) -> Any:
    return item


def default_loader_threads() -> int:
    """The usable cores but one, which the training loop itself needs (at least 1).

    Measured on 2 cores: one reading thread beside the loop gave 62k samples/s
    of contiguous rows, two gave 40k (the Python that places rows holds the
    GIL); on gzip rows they were even.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores - 1)

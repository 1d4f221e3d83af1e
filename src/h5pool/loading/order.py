"""An epoch's order as arithmetic on per-file counts: O(files), never O(samples).

Why: a corpus of a billion samples cannot have its epoch written out in every
rank (15 GB and half a minute per epoch).  What the order needs is small: a
permutation of the *files*, cut into blocks of ``files_per_block`` files, and
the cumulative sample counts of those blocks.  A position in the epoch stream
then names a block by ``searchsorted``, and the samples of one block are laid
out and shuffled only when that block is reached, with a generator seeded by
``(seed, epoch, block)`` so any rank or worker can lay out any block alone.

Padding follows ``DistributedSampler``: positions past the end of the stream
wrap around to its start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray


class EpochOrder:
    """The stream of one epoch: files shuffled, blocked, samples shuffled per block."""

    def __init__(
        self, counts: IntArray, files_per_block: int, *, shuffle: bool, seed: int, epoch: int
    ) -> None:
        if files_per_block < 1:
            raise ValueError(f"files_per_block must be at least 1, got {files_per_block}")
        self.counts = np.asarray(counts, dtype=np.int64)
        self.files_per_block = files_per_block
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        files = len(self.counts)
        self.file_starts: IntArray = np.cumsum(self.counts) - self.counts
        # Four-byte file numbers: half the memory, and the shuffle twice as fast at
        # a million files; the same swaps as shuffling eight-byte ones.
        numbers = np.arange(files, dtype=np.int32 if files < 2**31 else np.int64)
        if shuffle:
            np.random.default_rng([seed, epoch]).shuffle(numbers)
        self.file_order: npt.NDArray[np.integer[Any]] = numbers
        firsts = np.arange(0, files, files_per_block)
        sizes = np.add.reduceat(self.counts[self.file_order], firsts) if files else firsts
        self.block_ends: IntArray = np.cumsum(sizes, dtype=np.int64)
        self.total = int(self.block_ends[-1]) if files else 0
        self._last: tuple[int, IntArray] | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.block_ends)

    def block_of_files(self) -> IntArray:
        """Each file's block number (file ``f`` is read in block ``result[f]``)."""
        blocks = np.empty(len(self.counts), dtype=np.int64)
        blocks[self.file_order] = (
            np.arange(len(self.counts), dtype=np.int64) // self.files_per_block
        )
        return blocks

    def block(self, number: int) -> IntArray:
        """The samples of block ``number``, in the order the epoch reads them."""
        if self._last is not None and self._last[0] == number:
            return self._last[1]
        first = number * self.files_per_block
        files = self.file_order[first : first + self.files_per_block]
        lengths = self.counts[files]
        runs = np.cumsum(lengths) - lengths
        samples: IntArray = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(
            self.file_starts[files] - runs, lengths
        )
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch, number]).shuffle(samples)
        self._last = (number, samples)
        return samples

    def segments(self, begin: int, end: int) -> Iterator[tuple[int, int, int]]:
        """``(block, first, stop)`` pieces covering stream positions ``[begin, end)``.

        Positions at or past the stream's end wrap around to its start (padding).
        """
        if self.total == 0:
            return
        position = begin
        while position < end:
            wrapped = position % self.total
            block = int(np.searchsorted(self.block_ends, wrapped, side="right"))
            block_start = int(self.block_ends[block - 1]) if block else 0
            first = wrapped - block_start
            stop = min(int(self.block_ends[block]) - block_start, first + end - position)
            yield block, first, stop
            position += stop - first

    def take(self, begin: int, end: int) -> IntArray:
        """The samples at stream positions ``[begin, end)``."""
        pieces = [self.block(b)[first:stop] for b, first, stop in self.segments(begin, end)]
        if not pieces:
            return np.empty(0, dtype=np.int64)
        return pieces[0].copy() if len(pieces) == 1 else np.concatenate(pieces)

    def chunks(self, begin: int, end: int) -> Iterator[IntArray]:
        """The samples at ``[begin, end)`` one block piece at a time (memory O(block))."""
        for block, first, stop in self.segments(begin, end):
            yield self.block(block)[first:stop]

    def dealt_for_workers(
        self, begin: int, end: int, batch_size: int, num_workers: int
    ) -> Iterator[IntArray]:
        """Positions ``[begin, end)`` reordered so DataLoader worker ``w`` gets block ``b``
        with ``b % num_workers == w``.

        DataLoader hands batch ``k`` to worker ``k % num_workers``.  Each worker's
        samples keep their order; whole batches are dealt round-robin while every
        worker has one, and the partial batches left go at the end, where they
        cannot shift the alignment.  Memory stays O(blocks + block).
        """
        streams: list[list[tuple[int, int, int]]] = [[] for _ in range(num_workers)]
        for block, first, stop in self.segments(begin, end):
            streams[block % num_workers].append((block, first, stop))
        sizes = [sum(stop - first for _, first, stop in s) for s in streams]
        full = [size // batch_size for size in sizes]
        readers = [_PieceReader(self, stream) for stream in streams]
        for batch in range(max(full, default=0)):
            for worker, reader in enumerate(readers):
                if batch < full[worker]:
                    yield reader.read(batch_size)
        for worker, reader in enumerate(readers):
            left = sizes[worker] - full[worker] * batch_size
            if left:
                yield reader.read(left)


class _PieceReader:
    """Reads a worker's pieces of the stream ``n`` samples at a time."""

    def __init__(self, order: EpochOrder, pieces: list[tuple[int, int, int]]) -> None:
        self.order = order
        self.pieces = iter(pieces)
        self.current: IntArray = np.empty(0, dtype=np.int64)

    def read(self, wanted: int) -> IntArray:
        parts: list[IntArray] = []
        while wanted > 0:
            if not len(self.current):
                block, first, stop = next(self.pieces)
                self.current = self.order.block(block)[first:stop]
            part, self.current = self.current[:wanted], self.current[wanted:]
            parts.append(part)
            wanted -= len(part)
        return np.concatenate(parts) if len(parts) != 1 else parts[0].copy()


def worker_stretches(batches: int, workers: int) -> IntArray:
    """Batch numbers in delivery order, so DataLoader's round-robin gives worker ``w``
    the ``w``-th contiguous stretch of the epoch (its own blocks of files)."""
    if workers < 2:
        return np.arange(batches, dtype=np.int64)
    stretches = np.array_split(np.arange(batches, dtype=np.int64), workers)
    grid = np.full((workers, len(stretches[0])), -1, dtype=np.int64)
    for worker, stretch in enumerate(stretches):
        grid[worker, : len(stretch)] = stretch
    dealt: IntArray = grid.T.reshape(-1)
    return dealt[dealt >= 0]

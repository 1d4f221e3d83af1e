"""Byte ranges of remote objects, read as aligned blocks with many requests in flight.

Why blocks: one ranged GET per row costs a round trip per sample; rows and
chunks of one batch cluster in a few megabytes of each object.  A batch's
ranges become aligned blocks (``block_bytes``, 1 MiB by default), clipped to
the object's size, merged where they touch, and every missing run of blocks
is sent at once as one ranged request (:mod:`h5pool.pool.range_requests`
keeps up to ``max_requests_in_flight`` of them open per process).  Blocks stay
in a per-process cache bounded in bytes, shared by threads; a block in flight
for another thread, batch or prefetch is waited for, not fetched twice.
:meth:`BlockCache.prefetch` sends the requests of batches still to come
without waiting for them.

Each object's stamp (size and ETag or mtime, as the index recorded it) is
checked when the process first reads it and then at most once per
``stale_after`` seconds, as local files are: a changed object raises
:class:`~h5pool.errors.FileChangedError`.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from h5pool.errors import CorpusError, FileChangedError, ReadError
from h5pool.pool.range_requests import RangeRequests
from h5pool.pool.remote import Filesystems, remote_error, stamp_of_details

#: Bytes per block: large enough that a batch's rows of one object share a few,
#: small enough that a random row does not fetch much it does not need.
DEFAULT_BLOCK_BYTES = 1 << 20
#: Requests open at once per ``cat_ranges`` call (fsspec's batch size).
DEFAULT_MAX_REQUESTS_IN_FLIGHT = 16
#: Bytes of blocks kept per process (first in, first out).
DEFAULT_BLOCK_CACHE_BYTES = 256 << 20

Block = tuple[str, int]
#: A block on its way: the future of its request, and where that request starts.
Pending = tuple["Future[bytes]", int]
Stamps = Callable[[str], tuple[int, int]]


@dataclass(frozen=True)
class RemoteReads:
    """How a dataset reads remote objects: ``block_bytes`` (``None``: through
    HDF5, one request at a time), requests in flight, and the block cache."""

    block_bytes: int | None = DEFAULT_BLOCK_BYTES
    max_requests_in_flight: int = DEFAULT_MAX_REQUESTS_IN_FLIGHT
    cache_bytes: int = DEFAULT_BLOCK_CACHE_BYTES


class BlockCache:
    """Aligned blocks of remote objects, fetched concurrently and kept in memory.

    Parameters
    ----------
    filesystems
        The process's fsspec filesystems (one per protocol).
    stamps
        The ``(size, stamp)`` the index recorded for a URL.
    block_bytes, max_requests_in_flight, max_bytes
        See the module's defaults.
    stale_after
        Seconds between two checks of an object's stamp (0: before every fetch).
    verified
        When the stamps were last read, by URL (the index's scan or ``stat``).
    """

    def __init__(
        self,
        filesystems: Filesystems,
        stamps: Stamps,
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        max_requests_in_flight: int = DEFAULT_MAX_REQUESTS_IN_FLIGHT,
        max_bytes: int = DEFAULT_BLOCK_CACHE_BYTES,
        stale_after: float = 1.0,
        verified: dict[str, float] | None = None,
    ) -> None:
        if block_bytes < 1 or max_requests_in_flight < 1:
            raise ValueError("block_bytes and max_requests_in_flight must be at least 1")
        self.filesystems = filesystems
        self.block_bytes = block_bytes
        self.max_requests_in_flight = max_requests_in_flight
        self.max_bytes = max_bytes
        self.stale_after = stale_after
        self._stamps = stamps
        self._blocks: dict[Block, bytes] = {}
        self._bytes = 0
        self._pending: dict[Block, Pending] = {}
        #: The ranged requests, bounded per process across threads and batches.
        self.ranges = RangeRequests(filesystems, max_requests_in_flight)
        #: When each object's stamp was last read (seeded with the index's own check).
        self._checked: dict[str, float] = dict(verified or {})
        self._lock = threading.Lock()
        #: Blocks the requests brought.
        self.blocks_fetched = 0

    @property
    def requests(self) -> int:
        """Ranged requests sent by this process's block cache."""
        return self.ranges.requests

    @property
    def peak_in_flight(self) -> int:
        """The most requests that were open at once (at most ``max_requests_in_flight``)."""
        return self.ranges.peak_in_flight

    def fetch(self, ranges: Sequence[tuple[str, int, int]]) -> dict[Block, bytes]:
        """The blocks that cover ``(url, offset, length)`` ranges, fetching the missing."""
        wanted = self._blocks_of(ranges)
        self._check_stamps({url for url, _ in wanted})
        found, waiting, sent_here = self._claim(wanted)
        for key, (future, run_start) in waiting.items():
            try:
                found[key] = self._block_of(key, future, run_start)
            except CorpusError:
                if future in sent_here:
                    raise
                # another thread's or a prefetch's request failed: ask once more
                # ourselves, so that its failure is ours only if it happens again
                _, again, _ = self._claim([key])
                future, run_start = again[key]
                found[key] = self._block_of(key, future, run_start)
        return found

    def prefetch(self, ranges: Sequence[tuple[str, int, int]]) -> int:
        """Start fetching the blocks of ``ranges`` that are neither kept nor in
        flight, and return without waiting; a later :meth:`fetch` waits for them.

        Nothing is sent while blocks in flight would fill half the cache: blocks
        fetched ahead must not push out those about to be read.  Returns how
        many blocks were asked for."""
        with self._lock:
            if len(self._pending) * self.block_bytes >= self.max_bytes // 2:
                return 0  # what is in flight already fills half the cache
        _, sent, _ = self._claim(self._blocks_of(ranges), prefetching=True)
        return len(sent)

    def read(self, blocks: dict[Block, bytes], url: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``url`` at ``offset``, out of ``blocks``."""
        block = self.block_bytes
        first, last = offset // block, (offset + max(length, 1) - 1) // block
        if first == last:
            start = offset - first * block
            data = blocks[(url, first)][start : start + length]
        else:
            joined = b"".join(blocks[(url, n)] for n in range(first, last + 1))
            start = offset - first * block
            data = joined[start : start + length]
        if len(data) != length:
            raise ReadError(
                f"{url}: {length} bytes at {offset:,} lie past the end of the object "
                "(changed since indexing?)",
                path=url,
            )
        return data

    def _blocks_of(self, ranges: Sequence[tuple[str, int, int]]) -> list[Block]:
        wanted: set[Block] = set()
        block = self.block_bytes
        for url, offset, length in ranges:
            first, last = offset // block, (offset + max(length, 1) - 1) // block
            wanted.update((url, number) for number in range(first, last + 1))
        return sorted(wanted)

    def _claim(
        self, wanted: list[Block], prefetching: bool = False
    ) -> tuple[dict[Block, bytes], dict[Block, Pending], set[Future[bytes]]]:
        """Blocks kept, the futures of the others (in flight already, or sent now,
        touching blocks of an object in one request), and the futures sent now.
        A prefetch leaves out the blocks in flight already."""
        found: dict[Block, bytes] = {}
        waiting: dict[Block, Pending] = {}
        missing: list[Block] = []
        with self._lock:
            for key in wanted:
                data = self._blocks.get(key)
                if data is not None:
                    found[key] = data
                elif key in self._pending:
                    if not prefetching:
                        waiting[key] = self._pending[key]
                else:
                    missing.append(key)
            runs = _runs(missing)
            for url, first, last in runs:
                start = first * self.block_bytes
                end = min((last + 1) * self.block_bytes, self._stamps(url)[0])
                future = self.ranges.get(url, start, end)
                for number in range(first, last + 1):
                    self._pending[(url, number)] = waiting[(url, number)] = (future, start)
        sent: set[Future[bytes]] = set()
        for url, first, last in runs:
            future, _ = waiting[(url, first)]
            sent.add(future)
            future.add_done_callback(functools.partial(self._arrived, url, first, last))
        return found, waiting, sent

    def _arrived(self, url: str, first: int, last: int, future: Future[bytes]) -> None:
        """Keep a request's blocks (on the event loop's thread); a failed or short
        answer keeps nothing, and its readers raise when they look."""
        keys = [(url, number) for number in range(first, last + 1)]
        data = None if future.cancelled() or future.exception() else future.result()
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)
            if data is None or len(data) != self._expected(url, first, last):
                return
            self.blocks_fetched += len(keys)
            for number, key in enumerate(keys):
                begin = number * self.block_bytes
                piece = data if len(keys) == 1 else data[begin : begin + self.block_bytes]
                self._keep_locked(key, piece)

    def _block_of(self, key: Block, future: Future[bytes], run_start: int) -> bytes:
        url, number = key
        try:
            data = future.result()
        except Exception as exc:
            raise remote_error(url, exc) from exc
        end = min((number + 1) * self.block_bytes, self._stamps(url)[0])
        begin = number * self.block_bytes
        piece = data[begin - run_start : end - run_start]
        if len(piece) != end - begin:
            raise ReadError(
                f"{url}: asked for bytes {begin:,}-{end:,}, got {len(piece):,} "
                "(object changed since indexing?)",
                path=url,
            )
        return piece

    def _expected(self, url: str, first: int, last: int) -> int:
        return min((last + 1) * self.block_bytes, self._stamps(url)[0]) - first * self.block_bytes

    def _keep_locked(self, key: Block, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        old = self._blocks.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._blocks[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            evicted = self._blocks.pop(next(iter(self._blocks)))
            self._bytes -= len(evicted)

    def _check_stamps(self, urls: set[str]) -> None:
        """Stamps that are due, asked for together: one round trip for all of them,
        not one per object (a HEAD each, sequentially, cost 20 ms per object)."""
        now = time.monotonic()
        due = sorted(url for url in urls if now - self._checked.get(url, -1e18) >= self.stale_after)
        if not due:
            return
        asked = [self.ranges.details(url) for url in due]
        answers = [_answer(future) for future in asked]
        for url, answer in zip(due, answers, strict=True):
            if isinstance(answer, BaseException):
                raise remote_error(url, answer) from answer
            found = answer
            expected = self._stamps(url)
            if found != expected:
                raise FileChangedError(
                    f"{url}: object changed since it was indexed (size, stamp) was "
                    f"{expected}, now {found}; rebuild the dataset",
                    path=url,
                )
            self._checked[url] = time.monotonic()


def _answer(future: Future[dict[str, Any]]) -> tuple[int, int] | BaseException:
    """An object's stamp, or the error asking for it gave (raised, naming the URL,
    by the caller)."""
    try:
        return stamp_of_details(future.result())
    except Exception as exc:
        return exc


def _runs(keys: list[Block]) -> list[tuple[str, int, int]]:
    """Sorted blocks as runs ``(url, first, last)`` of touching block numbers."""
    runs: list[tuple[str, int, int]] = []
    for url, numbers in itertools.groupby(keys, key=lambda key: key[0]):
        run: list[int] = []
        for _, number in numbers:
            if run and number != run[-1] + 1:
                runs.append((url, run[0], run[-1]))
                run = []
            run.append(number)
        runs.append((url, run[0], run[-1]))
    return runs

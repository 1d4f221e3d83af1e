"""Byte ranges of remote objects, read as aligned blocks with many requests in flight.

Why blocks: one ranged GET per row costs a round trip per sample; rows and
chunks of one batch cluster in a few megabytes of each object.  A batch's
ranges become aligned blocks (``block_bytes``, 1 MiB by default), clipped to
the object's size, merged where they touch, and every missing block is fetched
in one call of fsspec's ``cat_ranges``, which keeps up to
``max_requests_in_flight`` requests open at once.  Blocks stay in a
per-process cache bounded in bytes, shared by threads; a block another thread
is fetching is waited for, not fetched twice.

Each object's stamp (size and ETag or mtime, as the index recorded it) is
checked when the process first reads it and then at most once per
``stale_after`` seconds, as local files are: a changed object raises
:class:`~h5pool.errors.FileChangedError`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from h5pool.errors import FileChangedError, ReadError
from h5pool.pool.remote import Filesystems, remote_error, stamp_of_details

#: Bytes per block: large enough that a batch's rows of one object share a few,
#: small enough that a random row does not fetch much it does not need.
DEFAULT_BLOCK_BYTES = 1 << 20
#: Requests open at once per ``cat_ranges`` call (fsspec's batch size).
DEFAULT_MAX_REQUESTS_IN_FLIGHT = 16
#: Bytes of blocks kept per process (first in, first out).
DEFAULT_BLOCK_CACHE_BYTES = 256 << 20

Block = tuple[str, int]
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
        self._pending: dict[Block, threading.Event] = {}
        #: When each object's stamp was last read (seeded with the index's own check).
        self._checked: dict[str, float] = dict(verified or {})
        self._lock = threading.Lock()
        #: Ranged requests sent, the blocks they brought, and the most sent in one
        #: concurrent call (capped by ``max_requests_in_flight``).
        self.requests = self.blocks_fetched = self.peak_in_flight = 0

    def fetch(self, ranges: Sequence[tuple[str, int, int]]) -> dict[Block, bytes]:
        """The blocks that cover ``(url, offset, length)`` ranges, fetching the missing."""
        wanted: set[Block] = set()
        block = self.block_bytes
        for url, offset, length in ranges:
            first, last = offset // block, (offset + max(length, 1) - 1) // block
            wanted.update((url, number) for number in range(first, last + 1))
        self._check_stamps({url for url, _ in wanted})
        found: dict[Block, bytes] = {}
        claimed: list[Block] = []
        waiting: list[tuple[Block, threading.Event]] = []
        with self._lock:
            for key in sorted(wanted):
                data = self._blocks.get(key)
                if data is not None:
                    found[key] = data
                elif key in self._pending:
                    waiting.append((key, self._pending[key]))
                else:
                    self._pending[key] = threading.Event()
                    claimed.append(key)
        try:
            found.update(self._get(claimed))
        finally:
            self._release(claimed)
        for key, event in waiting:
            event.wait()
            data = self._blocks.get(key)
            found[key] = data if data is not None else self._get([key])[key]
        return found

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

    def _get(self, keys: list[Block]) -> dict[Block, bytes]:
        """Fetch ``keys`` (sorted): touching blocks of an object in one range each."""
        if not keys:
            return {}
        block = self.block_bytes
        runs: list[tuple[str, int, int]] = []  # url, first block, last block
        for url, numbers in itertools.groupby(keys, key=lambda key: key[0]):
            run: list[int] = []
            for _, number in numbers:
                if run and number != run[-1] + 1:
                    runs.append((url, run[0], run[-1]))
                    run = []
                run.append(number)
            runs.append((url, run[0], run[-1]))
        sizes = {url: self._stamps(url)[0] for url, _, _ in runs}
        paths = [url for url, _, _ in runs]
        starts = [first * block for _, first, _ in runs]
        ends = [min((last + 1) * block, sizes[url]) for url, _, last in runs]
        filesystem = self.filesystems.for_url(paths[0])
        try:
            results = filesystem.cat_ranges(
                paths, starts, ends, on_error="return", batch_size=self.max_requests_in_flight
            )
        except Exception as exc:
            raise remote_error(paths[0], exc) from exc
        fetched: dict[Block, bytes] = {}
        for (url, first, last), start, end, data in zip(runs, starts, ends, results, strict=True):
            if isinstance(data, BaseException):
                raise remote_error(url, data) from data
            if len(data) != end - start:
                raise ReadError(
                    f"{url}: asked for bytes {start:,}-{end:,}, got {len(data):,} "
                    "(object changed since indexing?)",
                    path=url,
                )
            for number in range(first, last + 1):
                begin = number * block - start
                fetched[(url, number)] = bytes(data[begin : begin + block])
        with self._lock:
            self.requests += len(runs)
            self.peak_in_flight = max(
                self.peak_in_flight, min(len(runs), self.max_requests_in_flight)
            )
            self.blocks_fetched += len(fetched)
            for key, data in fetched.items():
                self._keep_locked(key, data)
        return fetched

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

    def _release(self, keys: list[Block]) -> None:
        with self._lock:
            events = [self._pending.pop(key, None) for key in keys]
        for event in events:
            if event is not None:
                event.set()

    def _check_stamps(self, urls: set[str]) -> None:
        """Stamps that are due, asked for together: one round trip for all of them,
        not one per object (a HEAD each, sequentially, cost 20 ms per object)."""
        now = time.monotonic()
        due = sorted(url for url in urls if now - self._checked.get(url, -1e18) >= self.stale_after)
        if not due:
            return
        workers = min(len(due), self.max_requests_in_flight)
        with ThreadPoolExecutor(workers, thread_name_prefix="h5pool-stamp") as executor:
            answers = list(executor.map(self._stamp_now, due))
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

    def _stamp_now(self, url: str) -> tuple[int, int] | BaseException:
        try:
            return stamp_of_details(self.filesystems.for_url(url).info(url))
        except Exception as exc:  # raised, naming the URL, by the caller
            return exc

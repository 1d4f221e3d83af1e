"""The per-process file table: raw descriptors of an index's files, as arrays.

Why: a file visit through the pool's path-keyed LRU decodes a path, takes a
Python-level LRU step, makes a pin and an ``fstat``: several microseconds, more
than the ``pread`` it serves.  Here everything is indexed by file number:
descriptor (-1 when closed), pin count, last use and the time the stamp was
last checked are numpy arrays, so a batch's visits are array operations and a
hit decodes no path and makes no object.  A path is decoded only to open a file.

The table shares the pool's lock and its ``max_open`` budget: its descriptors
count with the pool's, and when the pool needs room it evicts the table's least
recently used unpinned files too (see ``HandlePool.attach_table``).

Stamps are checked when a file opens and then at most once per ``stale_after``
seconds per process, as NFS clients cache file attributes for ``actimeo``
seconds: a file rewritten or truncated under an open descriptor is found within
that bound.  ``stale_after=0`` checks at every visit.
"""

from __future__ import annotations

import array
import contextlib
import os
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from h5pool._typing import IntArray
from h5pool.errors import FileChangedError, MissingFileError
from h5pool.pool.pooled_file import open_descriptor


class SharedPool(Protocol):
    """What a table asks of the pool whose lock and budget it shares
    (:class:`~h5pool.pool.handle_pool.HandlePool`)."""

    returned_descriptors: list[int]
    max_open: int
    _descriptors: int
    _pin_waiters: int

    @property
    def lock(self) -> Any: ...

    def attach_table(self, table: FileTable) -> None: ...
    def detach_table(self, table: FileTable) -> None: ...
    def make_room_locked(self, path: str) -> None: ...
    def open_with_retry_locked(self, path: str, opener: Callable[[], int]) -> int: ...
    def descriptor_opened_locked(self) -> None: ...
    def descriptors_closed_locked(self, count: int) -> None: ...
    def trim_locked(self) -> None: ...
    def wait_for_pin_room_locked(self, within: int) -> int: ...
    def pins_released_locked(self) -> None: ...


#: Default bound, in seconds, between two stamp checks of an open file.
DEFAULT_STALE_AFTER = 1.0

#: ``stamp_of(file_number)`` gives the ``(size, mtime_ns)`` the index recorded.
Stamps = Callable[[int], tuple[int, int]]


def _give_back(fds: array.array[int], returned: list[int]) -> None:
    items = np.frombuffer(fds, dtype=np.int64) if len(fds) else np.zeros(0, np.int64)
    still_open = items[items >= 0].tolist()
    for fd in still_open:
        with contextlib.suppress(OSError):
            os.close(fd)
    closed = len(still_open)
    if closed:
        returned.append(closed)  # atomic under the GIL; applied by the pool


def _empty(dtype: Any) -> Any:
    return np.zeros(0, dtype=dtype)


class FileTable:
    """Raw descriptors of the files ``paths``, indexed by file number.

    Parameters
    ----------
    pool
        The pool whose lock and descriptor budget the table shares.
    paths
        The files, by number (an index's ``files``); read only to open one.
    stamps
        The ``(size, mtime_ns)`` each file had when indexed.
    stale_after
        Seconds between two stamp checks of an open file (0: every visit).
    """

    def __init__(
        self,
        pool: SharedPool,
        paths: Sequence[str],
        stamps: Stamps,
        *,
        stale_after: float = DEFAULT_STALE_AFTER,
    ) -> None:
        if stale_after < 0:
            raise ValueError(f"stale_after must be >= 0 seconds, not {stale_after}")
        self.pool = pool
        self.paths = paths
        self.stale_after = float(stale_after)
        self._stamps = stamps
        count = len(paths)
        # Each array twice over one memory: numpy for a batch's array operations,
        # ``array.array`` for ``ds[i]``, whose items read as ints in ~30 ns
        # (a numpy item makes a numpy scalar, ~100 ns).
        self._fd_items = array.array("q", [-1]) * count
        self._pin_items = array.array("q", [0]) * count
        self._use_items = array.array("q", [0]) * count
        self._check_items = array.array("d", [0.0]) * count
        self.fds = np.frombuffer(self._fd_items, dtype=np.int64) if count else _empty(np.int64)
        self.pins = np.frombuffer(self._pin_items, dtype=np.int64) if count else _empty(np.int64)
        self.last_used = (
            np.frombuffer(self._use_items, dtype=np.int64) if count else _empty(np.int64)
        )
        self.checked_at = (
            np.frombuffer(self._check_items, dtype=np.float64) if count else _empty(np.float64)
        )
        self.doomed = np.zeros(count, dtype=bool)
        self.doomed_count = 0
        self.open_count = 0
        #: Files with at least one pin (what a batch may still pin is budgeted by it).
        self.pinned_count = 0
        #: The open files' numbers: eviction looks among these, not every file.
        self._open: set[int] = set()
        self._tick = 0
        #: Visits that found the file open, and that opened it (the pool's stats sum them).
        self.hits = self.misses = 0
        #: The pool's lock (replaced in a forked child, see :meth:`forget_locked`).
        self._lock = pool.lock
        pool.attach_table(self)
        # A table dropped without close() (its engine replaced) still gives its
        # descriptors back: closed here, counted back by the pool under its lock.
        weakref.finalize(self, _give_back, self._fd_items, pool.returned_descriptors)

    def close(self) -> None:
        """Close every descriptor and leave the pool (the engine is done with it)."""
        with self.pool.lock:
            self._close_locked(self._open_numbers())
            self.doomed[:] = False
            self.doomed_count = 0
        self.pool.detach_table(self)

    # -- visits ---------------------------------------------------------------------

    def pin(self, file_numbers: IntArray, *, within: int | None = None) -> IntArray:
        """Pin the distinct ``file_numbers`` and return their descriptors, opening
        the closed ones and checking the stamps that are due.

        With ``within``, pin only the first files that keep the files pinned by
        every table of the pool at most ``within`` (always at least one, so a
        reader makes progress): the caller reads those, unpins, and asks again.
        """
        pool = self.pool
        with self._lock:
            if within is not None:
                room = pool.wait_for_pin_room_locked(within)
                file_numbers = file_numbers[:room]
            newly = int(np.count_nonzero(self.pins[file_numbers] == 0))
            self.pins[file_numbers] += 1  # first: opening one must not evict another
            self.pinned_count += newly
            fds = self.fds[file_numbers]
            closed = file_numbers[fds < 0]
            self.hits += len(file_numbers) - len(closed)
            self.misses += len(closed)
            try:
                for file_number in closed.tolist():
                    self._open_locked(file_number)
            except BaseException:
                self.pins[file_numbers] -= 1
                self.pinned_count -= newly
                raise
            self._tick += 1
            self.last_used[file_numbers] = self._tick
            fds = self.fds[file_numbers] if len(closed) else fds
        try:
            self._check_due(file_numbers, fds)
        except BaseException:
            self.unpin(file_numbers)
            raise
        return fds

    def pin_one(self, file_number: int) -> int:
        """:meth:`pin` of one file: its descriptor.

        ``ds[i]``'s path, kept to a few ``array.array`` items under the lock.
        The pool's fork hook resets the table in a forked child before anything
        runs there, so this path asks for no process id.
        """
        with self._lock:
            fd = self._fd_items[file_number]
            if fd < 0:
                self.misses += 1
                fd = self._open_locked(file_number)
            else:
                self.hits += 1
            pins = self._pin_items
            if not pins[file_number]:
                self.pinned_count += 1
            pins[file_number] += 1  # after the open: nothing of ours to evict
            self._tick += 1
            self._use_items[file_number] = self._tick
        if time.monotonic() - self._check_items[file_number] >= self.stale_after:
            try:
                self._check(file_number, fd)
            except BaseException:
                self.unpin_one(file_number)
                raise
        return fd

    def unpin(self, file_numbers: IntArray) -> None:
        with self._lock:
            self.pins[file_numbers] -= 1
            self.pinned_count -= int(np.count_nonzero(self.pins[file_numbers] == 0))
            self._after_unpin_locked()
            self.pool.pins_released_locked()

    def unpin_one(self, file_number: int) -> None:
        pool = self.pool
        with self._lock:
            pins = self._pin_items
            pins[file_number] -= 1
            if not pins[file_number]:
                self.pinned_count -= 1
                if pool._pin_waiters:
                    pool.pins_released_locked()
            if self.doomed_count or pool._descriptors > pool.max_open:
                self._after_unpin_locked()

    # -- stamps ---------------------------------------------------------------------

    def _check_due(self, file_numbers: IntArray, fds: IntArray) -> None:
        now = time.monotonic()
        due = np.flatnonzero(now - self.checked_at[file_numbers] >= self.stale_after)
        for position in due.tolist():
            self._check(int(file_numbers[position]), int(fds[position]))

    def _check(self, file_number: int, fd: int) -> None:
        """Refuse a file replaced, truncated or rewritten since it was indexed."""
        info = os.fstat(fd)
        expected = self._stamps(file_number)
        found = (info.st_size, info.st_mtime_ns)
        if found != expected:
            path = self.paths[file_number]
            raise FileChangedError(
                f"{path}: file changed since it was indexed "
                f"(size, mtime_ns) was {expected}, now {found}; rebuild the dataset",
                path=path,
            )
        self.checked_at[file_number] = time.monotonic()

    # -- opening, evicting, closing (the pool's lock held) ----------------------------

    def _open_locked(self, file_number: int) -> int:
        path = self.paths[file_number]
        pool = self.pool
        pool.make_room_locked(path)
        try:
            fd: int = pool.open_with_retry_locked(path, lambda: open_descriptor(path))
        except MissingFileError as exc:
            raise MissingFileError(
                f"{path}: file was indexed but no longer exists (deleted after indexing?)",
                path=path,
            ) from exc
        self.fds[file_number] = fd
        self.checked_at[file_number] = 0.0  # a new descriptor: check its stamp now
        self.open_count += 1
        self._open.add(file_number)
        pool.descriptor_opened_locked()
        return fd

    def evict_locked(self, count: int) -> int:
        """Close up to ``count`` least recently used unpinned files; how many closed."""
        if count <= 0 or not self._open:
            return 0
        open_files = np.fromiter(self._open, dtype=np.int64, count=len(self._open))
        idle = open_files[self.pins[open_files] == 0]  # O(open files), never O(files)
        if not len(idle):
            return 0
        if len(idle) > count:
            idle = idle[np.argpartition(self.last_used[idle], count - 1)[:count]]
        self._close_locked(idle)
        return len(idle)

    def close_idle_locked(self) -> int:
        """Close every unpinned file now and mark the pinned ones to close when released."""
        open_files = self._open_numbers()
        pinned = self.pins[open_files] > 0
        self._close_locked(open_files[~pinned])
        self.doomed[open_files[pinned]] = True
        self.doomed_count = int(np.count_nonzero(pinned))
        return int(np.count_nonzero(~pinned))

    def _open_numbers(self) -> IntArray:
        return np.fromiter(self._open, dtype=np.int64, count=len(self._open))

    def forget_locked(self) -> None:
        """After a fork: close the child's copies of the descriptors, forget pins,
        and take the child's new lock of the pool."""
        self._lock = self.pool.lock
        for fd in self.fds[self._open_numbers()].tolist():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds[:] = -1
        self.pins[:] = 0
        self.doomed[:] = False
        self.doomed_count = 0
        self.checked_at[:] = 0.0
        self.open_count = 0
        self._open.clear()
        self.pinned_count = 0

    def open_paths(self) -> list[str]:
        return [self.paths[number] for number in sorted(self._open)]

    def _after_unpin_locked(self) -> None:
        if self.doomed_count:
            ready = np.flatnonzero(self.doomed & (self.pins == 0) & (self.fds >= 0))
            self._close_locked(ready)
            self.doomed[ready] = False
            self.doomed_count = int(np.count_nonzero(self.doomed))
        self.pool.trim_locked()

    def _close_locked(self, file_numbers: Any) -> None:
        for fd in self.fds[file_numbers].tolist():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds[file_numbers] = -1
        self._open.difference_update(np.asarray(file_numbers).tolist())
        self.open_count -= len(file_numbers)
        self.pool.descriptors_closed_locked(len(file_numbers))

"""The pool's side of the file tables: one lock, one ``max_open`` budget.

Why apart from the pool: a :class:`~h5pool.pool.file_table.FileTable` keeps
raw descriptors by file number for the read engine, and the pool keeps HDF5
handles by path; both count against the same ``max_open`` under the same lock,
so that neither can starve or overrun the other.  These are the methods the
tables call, always with the pool's lock held where the name says ``locked``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from h5pool.pool.file_table import FileTable

#: The longest a batch waits for other readers' pins before it overflows
#: max_open: readers release their pins within one batch, so this bounds only a
#: stall (a loaded machine), never a deadlock, and an overflow is not an error.
PIN_WAIT_SECONDS = 10.0


class SharedBudget:
    """What :class:`~h5pool.pool.handle_pool.HandlePool` shares with its file tables."""

    max_open: int
    returned_descriptors: list[int]
    _lock: threading.Lock
    _pin_room: threading.Condition
    _pin_waiters: int
    _tables: weakref.WeakSet[FileTable]
    _descriptors: int
    _peak: int
    _hits: int
    _misses: int
    _raw_opens: int
    _evictions: int

    def _make_room(self, path: str, needed: int) -> None:
        raise NotImplementedError

    def _with_emfile_retry(self, path: str, opener: Any) -> Any:
        raise NotImplementedError

    def _evict_down_to(self, size: int) -> bool:
        raise NotImplementedError

    def attach_table(self, table: FileTable) -> None:
        """Let ``table`` share this pool's lock and ``max_open`` budget."""
        self._tables.add(table)

    def detach_table(self, table: FileTable) -> None:
        self._tables.discard(table)

    @property
    def lock(self) -> threading.Lock:
        """This process's lock of the pool (a forked child's is new)."""
        return self._lock

    def pinned_by_tables_locked(self) -> int:
        return sum(table.pinned_count for table in list(self._tables))

    def wait_for_pin_room_locked(self, within: int) -> int:
        """How many more files a batch may pin to keep every table's pins within
        ``within``: when none, wait for other readers to release theirs (up to
        :data:`PIN_WAIT_SECONDS`, then 1 beyond: an overflow, never a hang)."""
        room = within - self.pinned_by_tables_locked()
        deadline = time.monotonic() + PIN_WAIT_SECONDS
        while room < 1:
            left = deadline - time.monotonic()
            if left <= 0:
                return 1
            self._pin_waiters += 1
            try:
                self._pin_room.wait(timeout=left)
            finally:
                self._pin_waiters -= 1
            room = within - self.pinned_by_tables_locked()
        return room

    def pins_released_locked(self) -> None:
        if self._pin_waiters:
            self._pin_room.notify_all()

    def make_room_locked(self, path: str) -> None:
        self._make_room(path, 1)

    def open_with_retry_locked(self, path: str, opener: Callable[[], int]) -> int:
        fd: int = self._with_emfile_retry(path, opener)
        self._raw_opens += 1
        return fd

    def descriptor_opened_locked(self) -> None:
        self._descriptors += 1
        self._peak = max(self._peak, self._descriptors)

    def descriptors_closed_locked(self, count: int) -> None:
        self._descriptors -= count

    def trim_locked(self) -> None:
        if self._descriptors > self.max_open:
            self._evict_down_to(self.max_open)

    def _evict_from_tables(self, count: int) -> bool:
        """Close ``count`` idle descriptors of the file tables; False if they lack them.

        A table at the budget evicts a sixteenth of ``max_open`` at once: finding
        its least recently used files costs a pass over the open ones, which
        one eviction per miss would pay at every miss of a scan over many files.
        """
        count = max(count, self.max_open // 16)
        for table in list(self._tables):
            closed = table.evict_locked(count)
            self._evictions += closed
            count -= closed
            if count <= 0:
                return True
        return False

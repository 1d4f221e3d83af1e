"""The pool's table of open handles, in least-recently-used order, and its counters.

Why apart: eviction order (skip what is pinned, close what is evicted) is the
one rule the pool must never get wrong, and it fits in one small class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cachetools

from h5pool.pool.pooled_file import PooledFile


@dataclass(frozen=True)
class PoolStats:
    """Counters of one pool in the current process (reset by a fork).

    ``peak_open_files`` counts descriptors (a file open both raw and through
    HDF5 counts twice); ``hit_rate`` is hits over all acquisitions."""

    max_open: int
    hits: int
    misses: int
    evictions: int
    fork_resets: int
    emfile_retries: int
    overflows: int
    open_files: int
    pinned_files: int
    peak_open_files: int
    #: Files opened through libhdf5 (``h5py.File``) and as plain descriptors
    #: (``os.open``, for reads through byte maps).
    hdf5_opens: int = 0
    raw_opens: int = 0
    #: Descriptors held now: a file read both ways holds two.
    open_descriptors: int = 0

    @property
    def hit_rate(self) -> float:
        requests = self.hits + self.misses
        return self.hits / requests if requests else 0.0


class HandleLRU(cachetools.LRUCache[str, PooledFile]):
    """Every open handle, in least-recently-used order; eviction skips pinned ones.

    ``popitem`` is cachetools' one extension point for eviction.  Here it pops
    the least recently used *unpinned* handle and closes it, so nothing else can
    forget to; pinned handles it passes over are put back as most recently used
    (they are in use right now).  ``maxsize`` is unbounded: the pool decides when
    to evict, because a pinned handle may keep it above ``max_open`` for a while.
    """

    def __init__(self, on_evict: Any) -> None:
        super().__init__(maxsize=float("inf"))
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, PooledFile]:
        passed_over: list[tuple[str, PooledFile]] = []
        try:
            while True:
                key, entry = super().popitem()  # KeyError once nothing is left
                if entry.pins == 0:
                    self._on_evict(entry)
                    return key, entry
                passed_over.append((key, entry))
        finally:
            for key, entry in passed_over:
                self[key] = entry

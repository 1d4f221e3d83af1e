"""The threads that share one batch's work, and how the work is cut into shares.

Why apart from the engine: which rows to read is the engine's business; how
many threads exist in this process, that a forked child must not use its
parent's (they do not exist there), and that an error waits for every other
share (no thread may still write into a batch its caller has left) are not.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np


def default_batch_threads() -> int:
    """One thread per batch by default.

    Measured on 2 cores: in block order with the decoded-chunk cache, a batch
    of gzip rows has only ~8 new chunks to decode, and 2 threads read it
    1.08-1.23x as fast as one (1.3-1.7x when every chunk is decoded anew;
    images 1.3x).  Threads pay more across batches (``h5pool.Loader``), or
    within a batch for large chunks on many cores: pass ``num_threads`` then.
    """
    return 1


class BatchThreads:
    """``num_threads - 1`` helper threads of this process, plus the caller's own."""

    def __init__(self, num_threads: int) -> None:
        self.num_threads = num_threads
        self._pid = os.getpid()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[Any], None], shares: list[Any]) -> None:
        """``work(share)`` for every share, the first in this thread; waits for all,
        then raises the first error (no thread may write into a batch it left)."""
        executor = self._executor_for_process()
        futures: list[Future[None]] = [executor.submit(work, share) for share in shares[1:]]
        error: BaseException | None = None
        try:
            if shares:
                work(shares[0])
        except BaseException as exc:
            error = exc
        for future in futures:
            failure = future.exception()
            if failure is not None and error is None:
                error = failure
        if error is not None:
            raise error

    def close(self) -> None:
        with self._lock:
            if self._executor is not None and self._pid == os.getpid():
                self._executor.shutdown(wait=True)
            self._executor = None

    def _executor_for_process(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._executor = ThreadPoolExecutor(
                    self.num_threads - 1 or 1, thread_name_prefix="h5pool-read"
                )
            return self._executor


def split_evenly(items: list[Any], shares: int, weights: list[int] | None) -> list[list[Any]]:
    """Consecutive runs of ``items`` of about equal weight (default 1), one per thread."""
    if shares < 2:
        return [items] if items else []
    sizes = np.cumsum(weights if weights is not None else np.ones(len(items), dtype=np.int64))
    cuts = np.searchsorted(sizes, np.arange(1, shares) * sizes[-1] / shares, side="left")
    bounds = [0, *sorted(set((cuts + 1).tolist())), len(items)]
    return [items[b:e] for b, e in itertools.pairwise(bounds) if b < e]

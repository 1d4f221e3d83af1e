"""The Loader's fetching ahead: the blocks of remote objects that the next
batches will read, requested before their reads start.

Why: the Loader's threads keep ``num_threads * prefetch`` batches in flight,
each of which sends its requests only when its read starts.  Asking for the
blocks of the ``fetch_ahead`` batches after those lets their round trips
overlap the current batches' decoding (:meth:`PooledH5Dataset.prefetch`),
within the dataset's ``max_requests_in_flight``.

Planning a prefetch costs Python per batch, about what cutting its rows out of
cached blocks costs.  Once a corpus sits in the block cache every prefetch
finds nothing to fetch, and that planning slowed a cached epoch by 4-7%; so
after two idle prefetches in a row only every eighth batch is tried, until one
sends requests again.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator
from typing import Any

from h5pool._typing import IntArray
from h5pool.dataset import PooledH5Dataset

logger = logging.getLogger(__name__)

#: Idle prefetches in a row after which batches are only sampled, and how often.
IDLE_BEFORE_SAMPLING = 2
SAMPLE_EVERY = 8


def fetching_ahead(
    batches: Iterator[IntArray], count: int, prefetch: Callable[[IntArray], Any]
) -> Iterator[IntArray]:
    """``batches``, each handed on once ``prefetch`` was called on the ``count``
    after it."""
    ahead: collections.deque[IntArray] = collections.deque()
    for indices in batches:
        prefetch(indices)
        ahead.append(indices)
        if len(ahead) > count:
            yield ahead.popleft()
    yield from ahead


class Prefetcher:
    """``prefetcher(indices)``: plan and send a batch's prefetch with ``submit``
    (a reading thread's executor), sampling batches while prefetches are idle.

    Parameters
    ----------
    dataset
        The dataset whose :meth:`~PooledH5Dataset.prefetch` is called.
    submit
        ``submit(function, indices)``: runs the prefetch elsewhere.
    """

    def __init__(self, dataset: PooledH5Dataset, submit: Callable[..., Any]) -> None:
        self.dataset = dataset
        self.submit = submit
        self.asked = self.sent = 0
        self._seen = 0
        self._idle = 0  # prefetches in a row that sent nothing (threads race benignly)

    def __call__(self, indices: IntArray) -> None:
        self._seen += 1
        if self._idle >= IDLE_BEFORE_SAMPLING and self._seen % SAMPLE_EVERY:
            return
        self.submit(self._prefetch, indices)

    def _prefetch(self, indices: IntArray) -> None:
        """A prefetch is advice: if it fails, the batch's own read raises the
        error, naming the sample, in its turn."""
        self.asked += 1
        try:
            sent = self.dataset.prefetch(indices)
        except Exception:  # the read of these samples reports it
            logger.debug("prefetching a batch failed", exc_info=True)
            return
        self.sent += sent
        self._idle = 0 if sent else self._idle + 1

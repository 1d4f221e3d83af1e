"""Rows appended under SWMR since indexing, taken into the index.

A writer in SWMR mode appends to its datasets while readers read; the index
counted the rows once.  :func:`take_in_appended_rows` re-reads each key's
length (the shortest key sets a file's count, as a writer appends to its keys
one after another) and updates the index's counts and stamps in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from h5pool.errors import FileChangedError
from h5pool.index.corpus_index import CorpusIndex
from h5pool.index.opening import acquire_indexed
from h5pool.pool.handle_pool import HandlePool


def take_in_appended_rows(index: CorpusIndex, pool: HandlePool, keys: Sequence[str]) -> int:
    """Recount every file's rows; return how many samples were added.

    Raises
    ------
    FileChangedError
        A file now has fewer rows than were indexed.
    """
    before = len(index)
    counts = index.counts.copy()
    sizes, mtimes = index.sizes.copy(), index.mtimes.copy()
    for number, path in enumerate(index.files):
        entry = acquire_indexed(pool, index, number)
        try:
            lengths = []
            for key in keys:
                dataset = entry.dataset(key)
                dataset.refresh()
                lengths.append(int(dataset.shape[0]))
            if min(lengths) < counts[number]:
                raise FileChangedError(
                    f"{path}: {min(lengths)} rows, fewer than the {counts[number]} indexed",
                    path=path,
                )
            counts[number] = min(lengths)
            sizes[number], mtimes[number] = entry.stamp()
        finally:
            pool.release(entry)
    index.counts, index.sizes, index.mtimes = counts, sizes, mtimes
    index.ends = np.cumsum(counts, dtype=np.int64)
    return len(index) - before

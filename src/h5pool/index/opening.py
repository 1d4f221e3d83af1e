"""Opening an indexed file through the pool, with the error a user can act on.

A file the index lists but the pool cannot find was deleted (or moved) after
indexing: say so, rather than the pool's plain "no such file".
"""

from __future__ import annotations

from h5pool.errors import MissingFileError
from h5pool.index.corpus_index import CorpusIndex
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.pooled_file import PooledFile


def acquire_indexed(pool: HandlePool, index: CorpusIndex, file_number: int) -> PooledFile:
    """Pin file ``file_number`` of ``index`` open in ``pool``; release it after use.

    Raises
    ------
    MissingFileError
        The file was indexed but no longer exists.
    """
    path = index.files[file_number]
    try:
        return pool.acquire(path)
    except MissingFileError as exc:
        raise MissingFileError(
            f"{path}: file was indexed but no longer exists (deleted after indexing?)",
            path=path,
        ) from exc

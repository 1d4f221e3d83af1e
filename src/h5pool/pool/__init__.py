"""The pool layer: open files, capped by descriptors, safe across fork.

The bottom of h5pool.  It knows paths, descriptors and ``h5py.File`` objects,
nothing of indexes, samples or torch: a :class:`HandlePool` keeps the most
recently used files of a process open, pins the ones being read, counts raw and
HDF5 descriptors against ``max_open``, and starts empty again in a forked child.
"""

from h5pool.pool.descriptors import default_max_open, raise_fd_limit
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.lru import PoolStats
from h5pool.pool.pooled_file import PooledFile
from h5pool.pool.remote import Filesystems, is_url

__all__ = [
    "Filesystems",
    "HandlePool",
    "PoolStats",
    "PooledFile",
    "default_max_open",
    "is_url",
    "raise_fd_limit",
]

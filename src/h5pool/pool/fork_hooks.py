"""What a process owes its pools when it forks and when it exits.

Why: a forked child must close the handles it inherited before it opens
anything (HDF5 would hand the parent's file back to it), and every process
must close its handles while the interpreter still works (h5py files over
fsspec objects torn down at interpreter shutdown crashed spawn workers).
Pools register here with :func:`track`.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.util
import os
import weakref
from typing import Protocol


class ProcessBound(Protocol):
    """A pool as these hooks see it: the process it belongs to, and two duties."""

    pid: int

    def forget_inherited_handles(self) -> None: ...

    def close(self) -> None: ...


_live_pools: weakref.WeakSet[ProcessBound] = weakref.WeakSet()


def _reset_pools_in_child() -> None:
    for pool in list(_live_pools):
        pool.forget_inherited_handles()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_in_child)


def _close_pools_before_exit() -> None:
    """Close this process's handles while the interpreter still works.

    Left to interpreter shutdown, h5py files over fsspec objects are torn down
    after the modules they call into: spawn workers over S3 then died with a
    segmentation fault as they exited.  ``atexit`` covers the main process and
    spawn or forkserver children; ``multiprocessing.util.Finalize`` covers
    forked children, which leave through ``os._exit`` and skip ``atexit``.
    """
    for pool in list(_live_pools):
        if pool.pid == os.getpid():
            with contextlib.suppress(Exception):
                pool.close()


atexit.register(_close_pools_before_exit)
_exit_hooks_in: set[int] = set()


def hook_exit_of_this_process() -> None:
    if os.getpid() not in _exit_hooks_in:
        _exit_hooks_in.add(os.getpid())
        multiprocessing.util.Finalize(None, _close_pools_before_exit, exitpriority=100)


def track(pool: ProcessBound) -> None:
    """Reset ``pool`` in forked children and close it before this process exits."""
    _live_pools.add(pool)

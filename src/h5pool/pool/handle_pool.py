"""A per-process pool of open, read-only h5py files.

Why a pool: opening an HDF5 file costs 150-300 µs, far more than reading a sample
from an open one, yet a process cannot keep thousands open (``ulimit -n``), and
HDF5 gets slower at every open the more files it already holds.  The pool keeps
the ``max_open`` most recently used files open and closes the rest.

The design follows xarray's ``CachingFileManager`` and mends its two weak spots:

* The pool's *configuration* (``max_open``, ``file_kwargs``) is what pickles; the
  live handles never do.  A pool sent to a spawn/forkserver worker arrives empty.
* Handles are *pinned* while a caller uses them, and a pinned handle is never
  evicted or closed (xarray closed files that were still being read).
* A pool notices a ``fork``: HDF5 hands an inherited file back to a child that
  "reopens" the same path, so the child must close what it inherited *before*
  it opens anything.  Pools are reset eagerly in forked children through
  ``os.register_at_fork`` and, as a second line, lazily whenever the PID changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import cachetools
import h5py

from h5pool.pool.descriptors import (
    clamp_to_fd_limit,
    default_max_open,
    descriptor_limit_error,
    is_emfile,
)
from h5pool.pool.fork_hooks import hook_exit_of_this_process, track
from h5pool.pool.lru import HandleLRU, PoolStats
from h5pool.pool.pooled_file import PooledFile, open_descriptor, open_error
from h5pool.pool.remote import Filesystems, is_url, open_remote, remote_error, remote_stamp
from h5pool.pool.shared_budget import SharedBudget

if TYPE_CHECKING:
    from h5pool.pool.file_table import FileTable

logger = logging.getLogger(__name__)
#: Paths whose ``realpath`` a pool remembers.
PATH_MEMO_SIZE = 4096

#: HDF5 2.0 gives every open dataset an 8 MiB chunk cache; a pool of 128 files
#: with a few datasets each could then hold gigabytes per DataLoader worker.
#: 1 MiB still holds a whole chunk of h5py's auto-chunked datasets (≤ 1 MiB),
#: which is all a row-at-a-time reader re-uses.
DEFAULT_CHUNK_CACHE_BYTES = 1 << 20


def _default_file_kwargs() -> dict[str, Any]:
    return {"rdcc_nbytes": DEFAULT_CHUNK_CACHE_BYTES}


class HandlePool(SharedBudget):
    """An LRU pool of read-only ``h5py.File`` handles for the current process.

    At most ``max_open`` handles are open.  When every open handle is pinned and
    one more is asked for, the pool opens it anyway ("overflow", counted in
    :meth:`stats` and logged) rather than block: blocking would deadlock a
    thread that pins two files, and failing would break correct programs that
    briefly use more files than the cap.  The excess is closed as soon as
    handles are released.  If the process really runs out of descriptors the
    pool closes an idle handle and retries, and raises
    :class:`~h5pool.errors.DescriptorLimitError` when none is left.

    Parameters
    ----------
    max_open
        Handles open at once in this process (``None``:
        :func:`~h5pool.default_max_open`); clamped, with a warning, below the
        soft descriptor limit.
    file_kwargs
        Passed to ``h5py.File``; the default chunk cache is 1 MiB per dataset.
    storage_options
        fsspec options for URLs.
    open_options
        fsspec ``open`` options for URLs (default: a 1 MiB block cache).

    Examples
    --------
    >>> pool = HandlePool(max_open=64)  # doctest: +SKIP
    >>> with pool.open("/data/shards/shard_0.h5") as f:  # doctest: +SKIP
    ...     row = f["data"][0]
    """

    def __init__(
        self,
        max_open: int | None = None,
        *,
        file_kwargs: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        open_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_open is not None and max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self._requested_max_open = max_open
        self.max_open = clamp_to_fd_limit(max_open) if max_open is not None else default_max_open()
        self.file_kwargs: dict[str, Any] = _default_file_kwargs()
        self.file_kwargs.update(file_kwargs or {})
        self.file_kwargs.pop("mode", None)
        #: Files opened with ``swmr=True`` grow while they are read: their chunk
        #: tables move under a writer, so they are read through HDF5 only.
        self.appending = bool(self.file_kwargs.get("swmr"))
        self._plain_descriptor = (
            self.file_kwargs.get("driver") in (None, "sec2") and not self.appending
        )
        #: True when files are single local files HDF5 reads through one descriptor.
        self.plain_descriptor = self._plain_descriptor
        #: fsspec options for URLs (credentials, endpoint); see h5pool.pool.remote.
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        #: Options of fsspec's ``open`` for URLs (cache type, block size).
        self.open_options: dict[str, Any] = dict(open_options or {})
        #: File tables (one per read engine) that share this pool's lock and budget.
        self._tables: weakref.WeakSet[FileTable] = weakref.WeakSet()
        #: Descriptors closed by tables that were dropped unclosed, to count back.
        self.returned_descriptors: list[int] = []
        self._setup_process_state(fork_resets=0)
        track(self)

    # -- per-process state ---------------------------------------------------

    def _setup_process_state(self, *, fork_resets: int) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()
        #: Readers of file tables wait here for pins to be released (see above).
        self._pin_room = threading.Condition(self._lock)
        self._pin_waiters = 0
        self._handles = HandleLRU(self._close_evicted)
        # Never the parent's instances: fsspec's async filesystems are not fork-safe.
        self.filesystems = Filesystems(self.storage_options)
        # Bounded: a pool that sees a million distinct paths must not keep them all.
        self._normalised: cachetools.LRUCache[str, str] = cachetools.LRUCache(PATH_MEMO_SIZE)
        self._hits = self._misses = self._evictions = 0
        self._emfile_retries = self._overflows = self._peak = 0
        self._hdf5_opens = self._raw_opens = self._descriptors = 0
        self._fork_resets = fork_resets
        self.returned_descriptors.clear()  # counts of the parent's descriptors
        hook_exit_of_this_process()

    def forget_inherited_handles(self) -> None:
        """Close what a forked child inherited, before it opens anything.

        The parent's lock may have been held by a thread that does not exist in
        the child, so it is replaced rather than acquired.  Closing the child's
        copy of a descriptor does not affect the parent.
        """
        if self.pid == os.getpid():
            return
        inherited = list(self._handles.values())
        self._setup_process_state(fork_resets=self._fork_resets + 1)
        for entry in inherited:
            entry.close()
        for table in list(self._tables):
            table.forget_locked()
        if inherited:
            logger.debug("h5pool: closed %d handles inherited across fork", len(inherited))

    # -- pickling: configuration only -----------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "max_open": self._requested_max_open,
            "file_kwargs": self.file_kwargs,
            "storage_options": self.storage_options,
            "open_options": self.open_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["max_open"],
            file_kwargs=state["file_kwargs"],
            storage_options=state.get("storage_options"),
            open_options=state.get("open_options"),
        )

    def empty_copy(self) -> HandlePool:
        """A new, empty pool with this one's configuration (what pickling gives)."""
        copy = HandlePool.__new__(HandlePool)
        copy.__setstate__(self.__getstate__())
        return copy

    def __repr__(self) -> str:
        return f"HandlePool(max_open={self.max_open}, open={len(self)})"

    # -- public API -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._handles) + sum(table.open_count for table in list(self._tables))

    def __enter__(self) -> HandlePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def open(self, path: str | os.PathLike[str]) -> Iterator[h5py.File]:
        """Yield the open file for ``path``, pinned for the duration of the block.

        Parameters
        ----------
        path
            A local path (normalised with ``realpath``) or an fsspec URL.

        Yields
        ------
        h5py.File
            Open read-only; never evicted or closed while the block runs.

        Raises
        ------
        CorpusError
            The file is missing, unreadable or not HDF5 (naming it).
        DescriptorLimitError
            The process is out of descriptors and no idle handle is left to close.
        """
        entry = self.acquire(path)
        try:
            yield entry.file
        finally:
            self.release(entry)

    def acquire(
        self, path: str | os.PathLike[str], *, raw: bool = False, resolved: bool = False
    ) -> PooledFile:
        """Pin and return the pool's handle for ``path``; pair with :meth:`release`.

        The explicit pair is the hot path of the datasets: it avoids the cost of
        a generator-based context manager on every sample.  A hit is one LRU
        lookup and a counter; nothing moves between containers.

        ``raw=True`` asks only for a plain descriptor (``entry.fd``, or HDF5's
        own when the file is open through HDF5 already): byte-map reads need no
        more.  Without it the entry has an open ``h5py.File``; a file held as a
        plain descriptor gets its HDF5 handle now, and then holds two descriptors.
        URLs and other drivers than ``sec2`` are always opened through HDF5.

        ``resolved=True`` promises that ``path`` is a real path already (as an
        index's paths are), which saves a ``realpath`` of ~19 µs per new path.

        Parameters
        ----------
        path
            A local path or an fsspec URL.
        raw
            A plain descriptor is enough.
        resolved
            ``path`` is a real path already.

        Returns
        -------
        PooledFile
            The pinned entry; release it exactly once.

        Raises
        ------
        CorpusError
            The file is missing, unreadable or not HDF5 (naming it).
        DescriptorLimitError
            The process is out of descriptors and no idle handle is left to close.
        """
        key = os.fspath(path) if resolved else self._normalise(path)
        if self.pid != os.getpid():
            self.forget_inherited_handles()
        raw = raw and self._plain_descriptor and not is_url(key)
        with self._lock:
            try:
                entry: PooledFile | None = self._handles[key]
            except KeyError:
                entry = None
            if entry is None:
                self._misses += 1
                entry = self._open_new(key, raw=raw)
                entry.owner = self._handles
                self._handles[key] = entry
                self._descriptors += entry.descriptors
            else:
                self._hits += 1
                if not raw and not entry.has_hdf5:
                    self._make_room(key, 1)
                    entry.attach_hdf5(self._with_emfile_retry(key, lambda: self._open_hdf5(key)))
                    self._descriptors += 1
            if self._descriptors > self._peak:
                self._peak = self._descriptors
            entry.pins += 1
            return entry

    def release(self, entry: PooledFile) -> None:
        """Unpin ``entry``; an unpinned handle may be closed when the pool is full.

        Raises
        ------
        RuntimeError
            ``entry`` was released more often than it was acquired.
        """
        with self._lock:
            if entry.pins <= 0:
                raise RuntimeError(
                    f"{entry.path}: released more often than acquired (a second release "
                    "would let the pool close a handle still in use)"
                )
            entry.pins -= 1
            if entry.pins > 0 or entry.owner is not self._handles:
                return  # still pinned, or inherited across fork and already dropped
            if entry.doomed:
                del self._handles[entry.path]
                self._descriptors -= entry.descriptors
                entry.close()
            elif self._descriptors > self.max_open:
                self._evict_down_to(self.max_open)

    def close(self) -> None:
        """Close every idle handle now and every pinned one when it is released.

        The pool stays usable; counters are kept.
        """
        if self.pid != os.getpid():
            self.forget_inherited_handles()
            return
        with self._lock:
            idle = [entry for entry in self._handles.values() if entry.pins == 0]
            for entry in idle:
                del self._handles[entry.path]
                self._descriptors -= entry.descriptors
            for entry in self._handles.values():
                entry.doomed = True
            for table in list(self._tables):
                table.close_idle_locked()
        for entry in idle:
            entry.close()

    def stats(self) -> PoolStats:
        """This process's counters of the pool (a forked child starts from zero)."""
        with self._lock:
            tables = list(self._tables)
            return PoolStats(
                max_open=self.max_open,
                hits=self._hits + sum(t.hits for t in tables),
                misses=self._misses + sum(t.misses for t in tables),
                evictions=self._evictions,
                fork_resets=self._fork_resets,
                emfile_retries=self._emfile_retries,
                overflows=self._overflows,
                open_files=len(self._handles) + sum(t.open_count for t in tables),
                pinned_files=sum(1 for entry in self._handles.values() if entry.pins)
                + sum(t.pinned_count for t in tables),
                peak_open_files=self._peak,
                hdf5_opens=self._hdf5_opens,
                raw_opens=self._raw_opens,
                open_descriptors=self._descriptors,
            )

    def open_paths(self) -> list[str]:
        """The (normalised) paths open now."""
        with self._lock:
            paths = list(self._handles.keys())
            for table in list(self._tables):
                paths.extend(table.open_paths())
            return paths

    # -- internals --------------------------------------------------------------

    def stamp(self, path: str) -> tuple[int, int]:
        """(size, mtime in ns) of a local path or a URL, as the index records them."""
        if is_url(path):
            return remote_stamp(path, self.filesystems)
        info = os.stat(path)
        return info.st_size, info.st_mtime_ns

    def _normalise(self, path: str | os.PathLike[str]) -> str:
        """``realpath`` (URLs as they are), memoised: it costs several µs of syscalls."""
        raw = os.fspath(path)
        with self._lock:
            known = self._normalised.get(raw)
        if known is not None:
            return known
        resolved = raw if is_url(raw) else os.path.realpath(raw)
        with self._lock:
            self._normalised[raw] = resolved
        return resolved

    def _close_evicted(self, entry: PooledFile) -> None:
        self._evictions += 1
        self._descriptors -= entry.descriptors
        entry.close()

    def _evict_down_to(self, size: int) -> bool:
        """Evict idle handles until at most ``size`` descriptors are held; False if
        every handle left is pinned."""
        while self.returned_descriptors:
            self._descriptors -= self.returned_descriptors.pop()
        while self._descriptors > size:
            if not self._handles:  # only the file tables hold descriptors
                return self._evict_from_tables(self._descriptors - size)
            try:
                self._handles.popitem()
            except KeyError:
                return self._evict_from_tables(self._descriptors - size)
        return True

    def _make_room(self, path: str, needed: int) -> None:
        if not self._evict_down_to(self.max_open - needed):
            self._overflows += 1
            if self._overflows == 1:  # once per pool and process; stats() counts the rest
                logger.warning(
                    "h5pool: all %d handles are pinned; opening %s beyond max_open=%d "
                    "(logged once; PoolStats.overflows counts every time)",
                    len(self._handles),
                    path,
                    self.max_open,
                )

    def _open_new(self, path: str, *, raw: bool) -> PooledFile:
        self._make_room(path, 1)
        if is_url(path):
            self._hdf5_opens += 1
            return self._open_remote(path)
        if raw:
            fd = self._with_emfile_retry(path, lambda: open_descriptor(path))
            self._raw_opens += 1
            return PooledFile(path, None, plain_descriptor=True, fd=fd)
        handle = self._with_emfile_retry(path, lambda: self._open_hdf5(path))
        return PooledFile(path, handle, plain_descriptor=self._plain_descriptor)

    def _open_hdf5(self, path: str) -> h5py.File:
        try:
            handle = h5py.File(path, "r", **self.file_kwargs)
        except OSError as exc:
            if is_emfile(exc):
                raise
            raise open_error(path, exc) from exc
        self._hdf5_opens += 1
        return handle

    def _with_emfile_retry(self, path: str, opener: Any) -> Any:
        """``opener()``, closing idle handles and retrying while the process is out
        of descriptors; :class:`DescriptorLimitError` once none is idle."""
        while True:
            try:
                return opener()
            except OSError as exc:
                if not is_emfile(exc):
                    raise
                if not self._evict_down_to(self._descriptors - 1):
                    raise descriptor_limit_error(path, len(self._handles)) from exc
                self._emfile_retries += 1

    def _open_remote(self, url: str) -> PooledFile:
        """Open the fsspec file object, then HDF5 through it; both or neither stay open."""
        fileobj = open_remote(url, self.filesystems, self.open_options)
        kwargs = {k: v for k, v in self.file_kwargs.items() if k != "driver"}
        try:
            handle = h5py.File(fileobj, "r", **kwargs)
        except Exception as exc:
            fileobj.close()
            raise remote_error(url, exc) from exc
        return PooledFile(url, handle, plain_descriptor=False, fileobj=fileobj)

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

import atexit
import contextlib
import errno
import logging
import multiprocessing.util
import os
import resource
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cachetools
import h5py

from h5pool.errors import (
    CorpusError,
    DescriptorLimitError,
    MissingFileError,
    MissingKeyError,
    UnreadableFileError,
)
from h5pool.remote import (
    Filesystems,
    is_url,
    open_remote,
    remote_error,
    remote_stamp,
    stamp_of_details,
)

logger = logging.getLogger(__name__)
#: Paths whose ``realpath`` a pool remembers.
PATH_MEMO_SIZE = 4096

#: HDF5 2.0 gives every open dataset an 8 MiB chunk cache; a pool of 128 files
#: with a few datasets each could then hold gigabytes per DataLoader worker.
#: 1 MiB still holds a whole chunk of h5py's auto-chunked datasets (≤ 1 MiB),
#: which is all a row-at-a-time reader re-uses.
DEFAULT_CHUNK_CACHE_BYTES = 1 << 20

#: The default cap never exceeds this: each open HDF5 file also costs metadata
#: cache memory, and HDF5 slows down every open in proportion to the files held.
DEFAULT_MAX_OPEN_CEILING = 128


def default_max_open(soft_limit: int | None = None) -> int:
    """Derive a handle cap from the soft ``RLIMIT_NOFILE``.

    The formula is ``clamp(soft // 4, 1, 128)``: a quarter of the descriptors for
    HDF5 files leaves three quarters to everything else a training process
    holds (shared-memory tensors in flight, sockets of a process group, logs,
    imported libraries).  At the common limit of 1024 that gives 128; at 256
    (macOS) it gives 64.
    """
    if soft_limit is None:
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        return DEFAULT_MAX_OPEN_CEILING
    return max(1, min(DEFAULT_MAX_OPEN_CEILING, soft_limit // 4))


_clamp_warned: set[tuple[int, int]] = set()


def fd_headroom(soft_limit: int) -> int:
    """Descriptors left for everything but pooled files: an eighth, at least 16."""
    return max(16, soft_limit // 8)


def clamp_to_fd_limit(max_open: int) -> int:
    """``max_open``, but at most the soft ``RLIMIT_NOFILE`` minus :func:`fd_headroom`
    (at least 1): a pool allowed every descriptor makes every other ``open()`` of
    the process fail.  Warns once per (requested, limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or max_open <= soft - fd_headroom(soft):
        return max_open
    clamped = max(1, soft - fd_headroom(soft))
    if (max_open, soft) not in _clamp_warned:
        _clamp_warned.add((max_open, soft))
        logger.warning(
            "h5pool: max_open=%d leaves no descriptors under the soft limit of %d; "
            "using %d (raise the limit with h5pool.raise_fd_limit() or `ulimit -n`)",
            max_open,
            soft,
            clamped,
        )
    return clamped


def raise_fd_limit(target: int | None = None) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards the hard limit (or ``target``); return it.

    As EXtra-data does: the soft limit is often 1024 while the hard one is far
    higher, and only the soft one stops a process.  Never lowers the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if target is None else min(target, hard)
    if hard == resource.RLIM_INFINITY and target is None:
        wanted = max(soft, 1 << 20)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # e.g. above the kernel's nr_open
            logger.info("h5pool: could not raise the descriptor limit to %d", wanted)
            return soft
        logger.info("h5pool: raised the soft descriptor limit from %d to %d", soft, wanted)
        return wanted
    return soft


@dataclass(frozen=True)
class PoolStats:
    """Counters of one pool in the current process (reset by a fork)."""

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


class PooledFile:
    """One open file of the pool, with the objects looked up through it.

    A file is open as an ``h5py.File``, as a plain descriptor (``os.open``, all
    that reads through byte maps need, at a fraction of an HDF5 open), or both.

    Looked-up ``h5py.Dataset`` objects are kept because a name lookup costs
    ~35 µs and the first read through a fresh Dataset object far more; they die
    with the handle.  ``memo`` lets higher layers keep their own per-handle
    state (readers, offsets) under the same lifetime.
    """

    __slots__ = (
        "_datasets",
        "_file",
        "_raw_fd",
        "doomed",
        "fd",
        "fileobj",
        "memo",
        "owner",
        "path",
        "pins",
    )

    def __init__(
        self,
        path: str,
        file: h5py.File | None,
        *,
        plain_descriptor: bool = True,
        fileobj: Any = None,
        fd: int | None = None,
    ) -> None:
        self.path = path
        self._file = file
        #: A descriptor of the pool's own (``os.open``), for files read without HDF5.
        self.fd = fd
        #: For remote files, the fsspec file object HDF5 reads through; closed with the handle.
        self.fileobj = fileobj
        self.pins = 0
        self.doomed = False
        #: The pool's table of handles this entry sits in (replaced when a fork resets it).
        self.owner: Any = None
        self.memo: dict[Any, Any] = {}
        self._datasets: dict[str, h5py.Dataset] = {}
        # -1: not looked up yet.  Drivers other than sec2 have no plain descriptor.
        self._raw_fd: int | None = -1 if plain_descriptor else None

    @property
    def file(self) -> h5py.File:
        """The open ``h5py.File`` (acquire without ``raw=True`` to be sure there is one)."""
        if self._file is None:
            raise RuntimeError(f"{self.path} is open as a plain descriptor only")
        return self._file

    @property
    def has_hdf5(self) -> bool:
        return self._file is not None

    @property
    def descriptors(self) -> int:
        return (self._file is not None) + (self.fd is not None)

    def dataset(self, key: str) -> h5py.Dataset:
        try:
            return self._datasets[key]
        except KeyError:
            pass
        try:
            # The low-level open skips ~20 µs of high-level path handling per miss.
            dataset = h5py.Dataset(h5py.h5d.open(self.file.id, key.encode()))
        except (KeyError, ValueError, TypeError):
            pass
        else:
            self._datasets[key] = dataset
            return dataset
        try:
            node = self.file[key]
        except KeyError as exc:
            raise self._lookup_error(key, exc) from exc
        if not isinstance(node, h5py.Dataset):
            raise MissingKeyError(
                f"{self.path}: {key!r} is a {type(node).__name__}, not a dataset",
                path=self.path,
            )
        self._datasets[key] = node
        return node

    def _some_datasets(self, limit: int = 10) -> str:
        """``datasets: a, b, ...``: up to ``limit`` of the file's datasets, for messages."""
        found: list[str] = []

        def visit(name: str, node: Any) -> bool | None:
            if isinstance(node, h5py.Dataset):
                found.append(name)
            return True if len(found) > limit else None  # a true value stops the visit

        try:
            self.file.visititems(visit)
        except Exception:  # a damaged file: the message goes without the list
            return "its datasets cannot be listed"
        shown = ", ".join(found[:limit]) + (", ..." if len(found) > limit else "")
        return f"datasets: {shown}" if found else "it has no datasets"

    def _lookup_error(self, key: str, exc: KeyError) -> CorpusError:
        """A missing key, or one whose link exists but whose object HDF5 cannot read
        (a checksum or metadata failure of a damaged file): not the same problem."""
        try:
            linked = self.file.get(key, getlink=True) is not None
        except Exception:  # the path to it is damaged too
            linked = True
        if not linked:
            return MissingKeyError(
                f"{self.path}: no dataset {key!r} in the file; {self._some_datasets()}",
                path=self.path,
            )
        damage = (
            "a checksum failed" if "checksum" in str(exc).lower() else "its metadata is damaged"
        )
        return UnreadableFileError(
            f"{self.path}: {key!r} exists but cannot be read ({damage}): {exc}", path=self.path
        )

    def raw_fd(self) -> int | None:
        """The OS descriptor HDF5 reads through, for direct ``pread`` calls.

        Re-using HDF5's own descriptor costs no extra slot against ``max_open``.
        Only the default ``sec2`` driver has one plain descriptor per file.
        """
        if self.fd is not None:
            return self.fd
        if self._raw_fd == -1 and self._file is not None:
            handle = self.file.id.get_vfd_handle()
            self._raw_fd = handle if isinstance(handle, int) and handle >= 0 else None
        return self._raw_fd

    def close(self) -> None:
        self._datasets.clear()
        self.memo.clear()
        self._raw_fd = None
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # closing must never mask the error that led here
                logger.debug("h5pool: error while closing %s", self.path, exc_info=True)
            self._file = None
        if self.fileobj is not None:
            try:
                self.fileobj.close()
            except Exception:
                logger.debug("h5pool: error while closing %s", self.path, exc_info=True)

    def stamp(self) -> tuple[int, int]:
        """(size, mtime in ns) of the file this handle reads, without a new request."""
        if self.fileobj is not None:
            return stamp_of_details(getattr(self.fileobj, "details", {}))
        fd = self.raw_fd()
        info = os.fstat(fd) if fd is not None else os.stat(self.path)
        return info.st_size, info.st_mtime_ns

    def attach_hdf5(self, file: h5py.File) -> None:
        self._file = file


class _HandleLRU(cachetools.LRUCache[str, PooledFile]):
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


_live_pools: weakref.WeakSet[HandlePool] = weakref.WeakSet()


def _reset_pools_in_child() -> None:
    for pool in list(_live_pools):
        pool._forget_inherited_handles()


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
        if pool._pid == os.getpid():
            with contextlib.suppress(Exception):
                pool.close()


atexit.register(_close_pools_before_exit)
_exit_hooks_in: set[int] = set()


def _hook_exit_of_this_process() -> None:
    if os.getpid() not in _exit_hooks_in:
        _exit_hooks_in.add(os.getpid())
        multiprocessing.util.Finalize(None, _close_pools_before_exit, exitpriority=100)


def _default_file_kwargs() -> dict[str, Any]:
    return {"rdcc_nbytes": DEFAULT_CHUNK_CACHE_BYTES}


class HandlePool:
    """An LRU pool of read-only ``h5py.File`` handles for the current process.

    At most ``max_open`` handles are open.  When every open handle is pinned and
    one more is asked for, the pool opens it anyway ("overflow", counted in
    :meth:`stats` and logged) rather than block: blocking would deadlock a
    thread that pins two files, and failing would break correct programs that
    briefly use more files than the cap.  The excess is closed as soon as
    handles are released.  If the process really runs out of descriptors the
    pool closes an idle handle and retries, and raises
    :class:`~h5pool.errors.DescriptorLimitError` when none is left.
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
        #: fsspec options for URLs (credentials, endpoint); see h5pool.remote.
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        #: Options of fsspec's ``open`` for URLs (cache type, block size).
        self.open_options: dict[str, Any] = dict(open_options or {})
        self._setup_process_state(fork_resets=0)
        _live_pools.add(self)

    # -- per-process state ---------------------------------------------------

    def _setup_process_state(self, *, fork_resets: int) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._handles = _HandleLRU(self._close_evicted)
        # Never the parent's instances: fsspec's async filesystems are not fork-safe.
        self.filesystems = Filesystems(self.storage_options)
        # Bounded: a pool that sees a million distinct paths must not keep them all.
        self._normalised: cachetools.LRUCache[str, str] = cachetools.LRUCache(PATH_MEMO_SIZE)
        self._hits = self._misses = self._evictions = 0
        self._emfile_retries = self._overflows = self._peak = 0
        self._hdf5_opens = self._raw_opens = self._descriptors = 0
        self._fork_resets = fork_resets
        _hook_exit_of_this_process()

    def _forget_inherited_handles(self) -> None:
        """Close what a forked child inherited, before it opens anything.

        The parent's lock may have been held by a thread that does not exist in
        the child, so it is replaced rather than acquired.  Closing the child's
        copy of a descriptor does not affect the parent.
        """
        if self._pid == os.getpid():
            return
        inherited = list(self._handles.values())
        self._setup_process_state(fork_resets=self._fork_resets + 1)
        for entry in inherited:
            entry.close()
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
        return len(self._handles)

    def __enter__(self) -> HandlePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def open(self, path: str | os.PathLike[str]) -> Iterator[h5py.File]:
        """Yield the open file for ``path``, pinned for the duration of the block."""
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
        """
        key = os.fspath(path) if resolved else self._normalise(path)
        if self._pid != os.getpid():
            self._forget_inherited_handles()
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
        if self._pid != os.getpid():
            self._forget_inherited_handles()
            return
        with self._lock:
            idle = [entry for entry in self._handles.values() if entry.pins == 0]
            for entry in idle:
                del self._handles[entry.path]
                self._descriptors -= entry.descriptors
            for entry in self._handles.values():
                entry.doomed = True
        for entry in idle:
            entry.close()

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                max_open=self.max_open,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                fork_resets=self._fork_resets,
                emfile_retries=self._emfile_retries,
                overflows=self._overflows,
                open_files=len(self._handles),
                pinned_files=sum(1 for entry in self._handles.values() if entry.pins),
                peak_open_files=self._peak,
                hdf5_opens=self._hdf5_opens,
                raw_opens=self._raw_opens,
                open_descriptors=self._descriptors,
            )

    def open_paths(self) -> list[str]:
        """The (normalised) paths open now."""
        with self._lock:
            return list(self._handles.keys())

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
        while self._descriptors > size:
            try:
                self._handles.popitem()
            except KeyError:
                return False
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
            fd = self._with_emfile_retry(path, lambda: _open_descriptor(path))
            self._raw_opens += 1
            return PooledFile(path, None, plain_descriptor=True, fd=fd)
        handle = self._with_emfile_retry(path, lambda: self._open_hdf5(path))
        return PooledFile(path, handle, plain_descriptor=self._plain_descriptor)

    def _open_hdf5(self, path: str) -> h5py.File:
        try:
            handle = h5py.File(path, "r", **self.file_kwargs)
        except OSError as exc:
            if _is_emfile(exc):
                raise
            raise _open_error(path, exc) from exc
        self._hdf5_opens += 1
        return handle

    def _with_emfile_retry(self, path: str, opener: Any) -> Any:
        """``opener()``, closing idle handles and retrying while the process is out
        of descriptors; :class:`DescriptorLimitError` once none is idle."""
        while True:
            try:
                return opener()
            except OSError as exc:
                if not _is_emfile(exc):
                    raise
                if not self._evict_down_to(self._descriptors - 1):
                    raise _descriptor_limit_error(path, len(self._handles)) from exc
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


def _open_descriptor(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if _is_emfile(exc):
            raise
        raise _open_error(path, exc) from exc


def _is_emfile(exc: OSError) -> bool:
    return exc.errno == errno.EMFILE or "Too many open files" in str(exc)


def _open_error(path: str, exc: OSError) -> Exception:
    if exc.errno == errno.ENOENT or not os.path.exists(path):
        return MissingFileError(f"{path}: no such file", path=path)
    if os.path.isdir(path):
        return UnreadableFileError(f"{path}: is a directory, not an HDF5 file", path=path)
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    if size == 0:
        reason = "the file is empty (0 bytes)"
    elif "truncated" in str(exc):
        reason = f"the file is truncated ({size} bytes on disk)"
    elif "signature" in str(exc) or "not an HDF5" in str(exc).lower():
        reason = "not an HDF5 file"
    elif "already open for write" in str(exc):
        reason = (
            "another process has it open for writing; to read it while it is written "
            "under SWMR, pass file_kwargs={'swmr': True}"
        )
    elif _is_locking_failure(exc):
        reason = (
            "HDF5 could not lock it (file systems such as NFS and GPFS often refuse locks); "
            "pass file_kwargs={'locking': False} or set HDF5_USE_FILE_LOCKING=FALSE"
        )
    else:
        reason = "HDF5 could not open it"
    return UnreadableFileError(f"{path}: {reason}: {exc}", path=path)


def _is_locking_failure(exc: OSError) -> bool:
    text = str(exc).lower()
    return exc.errno == errno.ENOLCK or "errno = 37" in text or "unable to lock file" in text


def _descriptor_limit_error(path: str, pinned: int) -> DescriptorLimitError:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        advice = (
            f"Raise the limit (h5pool.raise_fd_limit(), `ulimit -n "
            f"{min(hard, max(soft * 2, 1024))}` or resource.setrlimit) or lower max_open"
        )
    else:
        advice = (
            f"The soft limit is already the hard limit ({hard}): ask for a higher hard limit "
            f"(limits.conf, the job scheduler) or lower max_open"
        )
    return DescriptorLimitError(
        f"cannot open {path}: the process hit its file-descriptor limit "
        f"(RLIMIT_NOFILE soft={soft}, hard={hard}) and all {pinned} pooled handles are "
        f"pinned. {advice} / the number of handles held at once."
    )

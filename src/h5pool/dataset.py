"""``PooledH5Dataset``: a map-style torch Dataset over many HDF5 files.

Why it is shaped this way: the dataset itself holds only configuration and the
numpy index, so it pickles in kilobytes into spawn/forkserver workers, and it
reaches files only through a :class:`~h5pool.pool.handle_pool.HandlePool`, which is empty
after construction (forking then is safe) and fresh in every worker.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from h5pool._typing import FileSpec, Indices, IntArray, Sample
from h5pool.errors import CorpusError, LayoutError
from h5pool.hdf5.chunks import DEFAULT_CHUNK_CACHE_BYTES
from h5pool.index.corpus_index import Layout
from h5pool.index.obtain import Verify, obtain_index
from h5pool.index.paths import PathList
from h5pool.index.swmr import take_in_appended_rows
from h5pool.pool.file_table import DEFAULT_STALE_AFTER
from h5pool.pool.handle_pool import HandlePool
from h5pool.read.engine import ReadEngine
from h5pool.read.named import NamedSamples, stack_samples
from h5pool.read.remote_blocks import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_BLOCK_CACHE_BYTES,
    DEFAULT_MAX_REQUESTS_IN_FLIGHT,
    RemoteReads,
)
from h5pool.read.sample_errors import flat, naming_sample, position_of
from h5pool.read.values import Strings, batch_values, sample_values, samples_of, to_tensor

logger = logging.getLogger(__name__)

Transform = Callable[[Sample], Any]
#: numpy kinds whose rows are plain tensors: ``ds[i]`` skips the batch-of-one detour.
_NUMBERS = frozenset("biufc")
#: Makes a dataset's engine once when threads (a Loader's) ask for it together.
_ENGINE_LOCK = threading.Lock()


#: Forks this process descends through: an engine made before the last one is
#: the parent's.  Compared at every ``ds[i]`` instead of ``os.getpid()``, a syscall.
_FORKS = 0


def _new_engine_lock() -> None:
    global _ENGINE_LOCK, _FORKS
    _ENGINE_LOCK = threading.Lock()  # a child must not inherit it held
    _FORKS += 1


os.register_at_fork(after_in_child=_new_engine_lock)


class PooledH5Dataset(Dataset[Any]):
    """Samples of many HDF5 files, served through a per-process handle pool.

    ``layout="rows"``: each key is a dataset whose axis 0 enumerates samples;
    a sample is ``{key: tensor}``.  ``layout="members"``: every dataset directly
    under ``group`` is one sample, in natural order of names; a sample is
    ``{"data": tensor, "attrs": dict}``.  ``layout="groups"``: every group
    directly under ``group`` (or each ``window`` of its rows) is one sample,
    ``{key: tensor, ..., "attrs": dict}``.  Strings, records and ragged rows
    follow the rules of :mod:`h5pool.read.values` in every layout.

    The dataset holds configuration, the index (numpy arrays per file) and a
    pool that is empty after construction, so it pickles in kilobytes into
    spawn and forkserver workers and forking after construction is safe.

    Parameters
    ----------
    files
        A path, a folder (every HDF5, netCDF-4 and AnnData file under it,
        recursively, in natural order), a glob, an fsspec URL, or a list of them.
    keys
        The datasets of a sample: paths in the file ("rows"), or inside each
        group ("groups"). Unused by "members".
    layout
        ``"rows"``, ``"members"`` or ``"groups"``: see the Layouts page.
    group
        The group whose members or subgroups are the samples.
    pool
        A :class:`~h5pool.HandlePool` to read through; by default a new one
        from ``max_open``, ``file_kwargs`` and ``storage_options``.
    max_open
        Files open at once per process (``None``: :func:`~h5pool.default_max_open`).
    file_kwargs
        Passed to ``h5py.File`` (``swmr``, ``locking``, ``rdcc_nbytes``, ...).
    storage_options
        fsspec options for URLs (``{"client_kwargs": {"endpoint_url": ...}}``).
    transform
        Applied to each sample by ``ds[i]`` and ``__getitems__``, not by
        :meth:`read_batch`.
    on_error
        ``"skip"`` leaves out files that fail the scan, listed in ``skipped``.
    index_cache
        A file to keep the index in between runs (locked, atomic, checksummed).
    progress
        Progress bars while listing and scanning.
    num_threads
        Threads that decode one batch's chunks (``None``: 1).
    chunk_cache_bytes
        Budget of the per-process cache of decoded chunks.
    verify
        How much a cached start checks: ``"stat"``, ``"listing"`` or ``"trust"``.
    scan_processes
        Processes that scan files not in the cache (``None``: by file count).
    window
        "groups" layout: rows per sample (0: the whole group).
    stride
        "groups" layout: the step between window starts.
    suffixes
        The file endings a folder listing picks up.
    strings
        String datasets as ``"str"`` (UTF-8 decoded) or ``"bytes"``.
    stale_after
        Seconds between two checks (an ``fstat``) that an open file is still the
        one indexed, per file and process; a file rewritten or truncated under an
        open descriptor is found within this bound, as NFS clients see attribute
        changes within ``actimeo``.  0 checks at every visit.
    remote_block_bytes
        Remote objects with byte maps are read in aligned blocks of this many
        bytes (1 MiB), many requests at once; ``None`` reads them through HDF5
        over an fsspec file object instead, one request at a time.
    max_requests_in_flight
        Ranged requests open at once per process, across threads, batches and
        :meth:`prefetch` (16); new connections ramp up to it.
    remote_cache_bytes
        Bytes of remote blocks kept per process, shared by threads (256 MiB);
        keep it above ``files_per_block`` times ``remote_block_bytes``, or a
        shuffled order evicts blocks before their next use.

    Raises
    ------
    CorpusError
        A file that cannot be listed or scanned, with ``on_error="raise"``:
        :class:`~h5pool.MissingFileError`, :class:`~h5pool.MissingKeyError`,
        :class:`~h5pool.LayoutError`, :class:`~h5pool.UnreadableFileError`, ...
    ValueError
        Options that contradict each other.

    Examples
    --------
    >>> ds = PooledH5Dataset("/data/shards", keys=["image", "label"])  # doctest: +SKIP
    >>> ds[0]["image"].shape, ds.locate(0)  # doctest: +SKIP
    (torch.Size([64, 64, 3]), ('/data/shards/shard_0.h5', 0))
    """

    def __init__(
        self,
        files: FileSpec,
        keys: str | Sequence[str] = "data",
        *,
        layout: Layout = "rows",
        group: str = "/",
        pool: HandlePool | None = None,
        max_open: int | None = None,
        file_kwargs: dict[str, Any] | None = None,
        storage_options: dict[str, Any] | None = None,
        transform: Transform | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        index_cache: str | os.PathLike[str] | None = None,
        progress: bool = False,
        num_threads: int | None = None,
        chunk_cache_bytes: int = DEFAULT_CHUNK_CACHE_BYTES,
        verify: Verify = "stat",
        scan_processes: int | None = None,
        window: int = 0,
        stride: int = 1,
        suffixes: Sequence[str] | None = None,
        strings: Strings = "str",
        stale_after: float = DEFAULT_STALE_AFTER,
        remote_block_bytes: int | None = DEFAULT_BLOCK_BYTES,
        max_requests_in_flight: int = DEFAULT_MAX_REQUESTS_IN_FLIGHT,
        remote_cache_bytes: int = DEFAULT_BLOCK_CACHE_BYTES,
    ) -> None:
        if layout not in ("rows", "members", "groups"):
            raise ValueError(f"layout must be 'rows', 'members' or 'groups', not {layout!r}")
        if window < 0 or stride < 1 or (window and layout != "groups"):
            raise ValueError("window >= 0 and stride >= 1, and window only with layout='groups'")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if pool is not None and (
            max_open is not None or file_kwargs is not None or storage_options is not None
        ):
            raise ValueError("pass either pool or max_open/file_kwargs/storage_options, not both")
        self.keys: tuple[str, ...] = (keys,) if isinstance(keys, str) else tuple(keys)
        if layout in ("rows", "groups") and not self.keys:
            raise ValueError(f"the {layout!r} layout needs at least one key")
        if stale_after < 0:
            raise ValueError(f"stale_after must be >= 0 seconds, not {stale_after}")
        #: Seconds between two stamp checks of an open file (see the class docstring).
        self.stale_after = float(stale_after)
        if (
            remote_block_bytes is not None and remote_block_bytes < 1
        ) or max_requests_in_flight < 1:
            raise ValueError("remote_block_bytes and max_requests_in_flight must be at least 1")
        #: How remote objects are read (see the class docstring).
        self.remote_reads = RemoteReads(
            remote_block_bytes, max_requests_in_flight, remote_cache_bytes
        )
        if strings not in ("str", "bytes"):
            raise ValueError(f"strings must be 'str' or 'bytes', not {strings!r}")
        #: String datasets as ``str`` (UTF-8 decoded) or as ``bytes``.
        self.strings: Strings = strings
        self.layout: Layout = layout
        self.group = group
        self.transform = transform
        #: Threads that read one batch (None: 1, see h5pool.read.threads.default_batch_threads).
        self.num_threads = num_threads
        #: Byte budget of the per-process cache of decoded chunks.
        self.chunk_cache_bytes = chunk_cache_bytes
        self._engine: ReadEngine | None = None
        self._engine_pid = -1
        self._engine_forks = -1
        if pool is None:
            pool = HandlePool(max_open, file_kwargs=file_kwargs, storage_options=storage_options)
        self.pool = pool

        self.verify: Verify = verify

        try:
            self.index, self.skipped, self.index_stats = obtain_index(
                files,
                layout=layout,
                keys=self.keys,
                group=group,
                pool=self.pool,
                cache=index_cache,
                verify=verify,
                on_error=on_error,
                progress=progress,
                scan_processes=scan_processes,
                suffixes=suffixes,
            )
        finally:
            # Leave nothing open in the constructing process: forking is safe now.
            self.pool.close()
        self.index.appending = self.pool.appending
        #: "groups" layout: rows per sample (0: the whole group) and the step between starts.
        self.window, self.stride = window, stride
        if layout == "groups":
            self.index.apply_windows(window, stride)
        self._named = NamedSamples(self.index, layout, group, self.keys, window)
        if len(self.index) == 0:
            logger.warning("h5pool: the corpus's %d files hold no samples", len(self.index.files))

    # -- the Dataset protocol -------------------------------------------------------

    @property
    def files(self) -> PathList:
        """The indexed files in index order (a compact sequence of paths)."""
        return self.index.files

    def __len__(self) -> int:
        return len(self.index)

    def locate(self, index: int) -> tuple[str, int]:
        """``(path, local_index)`` of a global sample index.

        Raises
        ------
        IndexError
            ``index`` is out of range.
        """
        file_number, local = self.index.locate(index)
        return self.index.files[file_number], local

    def __getitem__(self, index: int) -> Any:
        """Sample ``index``: ``{key: value}`` by the layout's and the value rules,
        passed through the transform if there is one.

        Raises
        ------
        IndexError
            ``index`` is out of range.
        CorpusError
            The file cannot be read, naming it, the key and the sample.
        """
        file_number, local = self.index.locate(index)
        try:
            if self.layout == "rows":
                engine = self.engine
                columns = engine.read_one(file_number, local)
                sample: Sample
                if engine.tensor_rows[file_number]:  # the shortest path: tensors as read
                    sample = {key: torch.from_numpy(column) for key, column in columns.items()}
                elif all(column.dtype.kind in _NUMBERS for column in columns.values()):
                    sample = {key: to_tensor(column) for key, column in columns.items()}
                else:  # strings, records, ragged rows: as a batch of one gives them
                    one_row = {key: column[None] for key, column in columns.items()}
                    sample = sample_values(self._values(one_row), 0)
            else:
                sample = self._named.read_one(self.pool, file_number, local, self.strings)
        except CorpusError as exc:
            raise naming_sample(exc, index) from (exc.__cause__ or exc)
        return self.transform(sample) if self.transform is not None else sample

    def __getitems__(self, indices: Indices) -> list[Any]:
        """A batch, in request order, equal to ``[self[i] for i in indices]``.

        DataLoader calls this with a whole batch when it exists.  Duplicates and
        any order are allowed.  In the "rows" layout the batch is read by
        :meth:`read_batch` (each file pinned once, rows straight into one array
        per key) when its files agree on every key's dtype and row shape, and
        sample by sample otherwise; the transform is applied once per sample.
        """
        file_numbers, rows = self.index.locate_many(indices)
        if self.layout == "rows":
            try:
                columns = self._read_columns(file_numbers, rows, indices)
            except LayoutError:
                samples = [self._untransformed(i) for i in flat(indices)]
            else:
                samples = samples_of(self._values(columns), len(file_numbers))
        else:
            samples = self._named.read_many(self.pool, file_numbers, rows, indices, self.strings)
        if self.transform is not None:
            return [self.transform(sample) for sample in samples]
        return samples

    def read_batch(self, indices: Indices) -> dict[str, Any]:
        """The samples ``indices`` stacked per key: ``{key: tensor of shape (B, ...)}``.

        Request order; duplicates and any order are fine.  Numeric keys give
        tensors (numpy arrays for types torch lacks, such as long double);
        strings, records, ragged and opaque rows follow :mod:`h5pool.read.values`
        (a ``list[str]``, ``key.field`` tensors, ...).  The transform is not
        applied: it works on samples.

        Parameters
        ----------
        indices
            Global sample indices (a list, an array or a tensor).

        Returns
        -------
        dict
            One stacked value per key; in the "groups" layout also
            ``"attrs"``, a list of each window's attributes.

        Raises
        ------
        LayoutError
            Files that disagree on a key's dtype or row shape (naming two of
            them), or the "members" layout.
        CorpusError
            A file that cannot be read, naming it and the sample.
        """
        if self.layout == "groups":
            file_numbers, rows = self.index.locate_many(indices)
            samples = self._named.read_many(self.pool, file_numbers, rows, indices, self.strings)
            return stack_samples(samples, self.keys)
        if self.layout != "rows":
            raise LayoutError(
                f"read_batch needs the 'rows' or 'groups' layout, not {self.layout!r}"
            )
        file_numbers, rows = self.index.locate_many(indices)
        return self._values(self._read_columns(file_numbers, rows, indices))

    def prefetch(self, indices: Indices) -> int:
        """Start fetching the blocks of remote objects that ``indices`` will read,
        and return at once.

        A later :meth:`read_batch` of those samples waits for the requests in
        flight instead of sending its own, so a loop that knows its next batches
        overlaps their round trips with the current one's decoding; the
        :class:`~h5pool.Loader` does this.  Requests stay within
        ``max_requests_in_flight``.  Local files, and objects read through HDF5
        (``remote_block_bytes=None``), have nothing to fetch ahead.

        Parameters
        ----------
        indices
            Global sample indices of the "rows" layout.

        Returns
        -------
        int
            The blocks asked for (0 when everything is cached or in flight).
        """
        if self.layout != "rows" or not self.index.files:
            return 0
        file_numbers, rows = self.index.locate_many(indices)
        return self.engine.prefetch(file_numbers, rows) if len(file_numbers) else 0

    @property
    def fetches_ahead(self) -> bool:
        """Whether :meth:`prefetch` has anything to do: objects read as blocks."""
        return self.layout == "rows" and self.engine.reads_blocks

    def _values(self, columns: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
        """Numpy columns as the user gets them (see h5pool.read.values)."""
        values: dict[str, Any] = {}
        for key, column in columns.items():
            values.update(batch_values(key, column, self.strings))
        return values

    def refresh(self) -> int:
        """Take in rows appended under SWMR since indexing; return how many.

        For files opened with ``file_kwargs={"swmr": True}`` in the "rows"
        layout: each key's length is re-read (the shortest key sets a file's
        count, as a writer appends to its keys one after another).  Rows that
        existed stay readable throughout; samplers and Loaders see the new ones
        from the next epoch on (DataLoader workers from their next start).

        Returns
        -------
        int
            The number of samples added.

        Raises
        ------
        ValueError
            Not the "rows" layout, or files not opened with ``swmr``.
        FileChangedError
            A file now has fewer rows than were indexed.
        """
        if not self.pool.appending or self.layout != "rows":
            raise ValueError("refresh() needs the 'rows' layout and file_kwargs={'swmr': True}")
        added = take_in_appended_rows(self.index, self.pool, self.keys)
        self.reset_engine()  # its per-file tables were sized for the old counts
        return added

    @property
    def engine(self) -> ReadEngine:
        """This process's read engine (made on first use, anew after a fork or when
        ``self.pool`` is replaced)."""
        engine = self._engine
        if engine is None or self._engine_forks != _FORKS or engine.pool is not self.pool:
            with _ENGINE_LOCK:  # else two threads could each make one, and one be lost
                engine = self._engine
                if engine is None or self._engine_forks != _FORKS or engine.pool is not self.pool:
                    self.reset_engine()
                    engine = ReadEngine(
                        self.index,
                        self.pool,
                        num_threads=self.num_threads,
                        chunk_cache_bytes=self.chunk_cache_bytes,
                        stale_after=self.stale_after,
                        remote=self.remote_reads,
                    )
                    self._engine, self._engine_pid = engine, os.getpid()
                    self._engine_forks = _FORKS
        return engine

    def reset_engine(self) -> None:
        """Drop this process's read engine (closing its descriptors and threads); the
        next read makes a new one, with a cold decoded-chunk cache."""
        engine, self._engine = self._engine, None
        if engine is not None and self._engine_pid == os.getpid():
            engine.close()

    # -- pickling -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["pool"] = self.pool.empty_copy()
        state["_engine"], state["_engine_pid"], state["_engine_forks"] = None, -1, -1
        return state

    def __repr__(self) -> str:
        return (
            f"PooledH5Dataset({len(self.files)} files, {len(self)} samples, "
            f"layout={self.layout!r}, keys={list(self.keys)!r}, pool={self.pool!r})"
        )

    # -- internals ------------------------------------------------------------------------

    def _read_columns(
        self, file_numbers: IntArray, rows: IntArray, indices: Indices
    ) -> dict[str, npt.NDArray[Any]]:
        if not len(file_numbers):  # an empty batch still has each key's row shape
            return self.engine.allocate([0], 0) if len(self.index.files) else {}
        try:
            return self.engine.read(file_numbers, rows)
        except LayoutError:
            raise
        except CorpusError as exc:
            failed = flat(indices)[position_of(self.index.files, exc, file_numbers, rows)]
            raise naming_sample(exc, failed) from (exc.__cause__ or exc)

    def _untransformed(self, index: int) -> Sample:
        transform, self.transform = self.transform, None
        try:
            sample: Sample = self[index]
        finally:
            self.transform = transform
        return sample

"""``PooledH5Dataset``: a map-style torch Dataset over many HDF5 files.

Why it is shaped this way: the dataset itself holds only configuration and the
numpy index, so it pickles in kilobytes into spawn/forkserver workers, and it
reaches files only through a :class:`~h5pool.pool.HandlePool`, which is empty
after construction (forking then is safe) and fresh in every worker.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from h5pool.errors import CorpusError, FileChangedError, MissingFileError
from h5pool.index import CorpusIndex, Layout, build_index
from h5pool.pool import HandlePool, PooledFile
from h5pool.readers import RowReader, decode_attrs, read_member
from h5pool.sources import FileSpec, expand_files

logger = logging.getLogger(__name__)

Sample = dict[str, Any]
IntArray = npt.NDArray[np.int64]
Indices = Sequence[int] | IntArray
Transform = Callable[[Sample], Any]
_TENSOR_KINDS = frozenset("biufc")


def to_tensor(array: npt.NDArray[Any]) -> Any:
    """A tensor sharing the array's memory; strings and objects stay numpy."""
    if array.dtype.kind not in _TENSOR_KINDS:
        return array
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(array)


class PooledH5Dataset(Dataset[Any]):
    """Samples of many HDF5 files, served through a per-process handle pool.

    ``layout="rows"``: each key is a dataset whose axis 0 enumerates samples;
    a sample is ``{key: tensor}``.  ``layout="members"``: every dataset directly
    under ``group`` is one sample, in natural order of names; a sample is
    ``{"data": tensor, "attrs": dict}``.
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
    ) -> None:
        if layout not in ("rows", "members"):
            raise ValueError(f"layout must be 'rows' or 'members', not {layout!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if pool is not None and (
            max_open is not None or file_kwargs is not None or storage_options is not None
        ):
            raise ValueError("pass either pool or max_open/file_kwargs/storage_options, not both")
        self.keys: tuple[str, ...] = (keys,) if isinstance(keys, str) else tuple(keys)
        if layout == "rows" and not self.keys:
            raise ValueError("the 'rows' layout needs at least one key")
        self.layout: Layout = layout
        self.group = group
        self.transform = transform
        if pool is None:
            pool = HandlePool(max_open, file_kwargs=file_kwargs, storage_options=storage_options)
        self.pool = pool
        self._memo_key = ("h5pool.dataset", uuid.uuid4().hex)

        paths = expand_files(files, self.pool.filesystems)
        cached = _load_index_cache(index_cache)
        try:
            self.index, self.skipped = build_index(
                paths,
                layout=layout,
                keys=self.keys,
                group=group,
                pool=self.pool,
                on_error=on_error,
                progress=progress,
                reuse=cached,
            )
        finally:
            # Leave nothing open in the constructing process: forking is safe now.
            self.pool.close()
        if index_cache is not None and (cached is None or not cached.same_entries(self.index)):
            self.index.save(index_cache)

    # -- the Dataset protocol -------------------------------------------------------

    @property
    def files(self) -> list[str]:
        return self.index.files

    def __len__(self) -> int:
        return len(self.index)

    def locate(self, index: int) -> tuple[str, int]:
        """``(path, local_index)`` of a global sample index."""
        file_number, local = self.index.locate(index)
        return self.index.files[file_number], local

    def __getitem__(self, index: int) -> Any:
        file_number, local = self.index.locate(index)
        try:
            entry = self._acquire(file_number)
            try:
                if self.layout == "rows":
                    readers = self._readers(entry, file_number)
                    sample: Sample = {r.key: to_tensor(r.read_row(local)) for r in readers}
                else:
                    sample = self._read_member(entry, file_number, local)
            finally:
                self.pool.release(entry)
        except CorpusError as exc:
            raise _naming_sample(exc, index) from (exc.__cause__ or exc)
        return self.transform(sample) if self.transform is not None else sample

    def __getitems__(self, indices: Indices) -> list[Any]:
        """A batch, in request order; each file of the batch is pinned once.

        Per (file, key), the direct path issues one ``preadv`` per run of
        consecutive rows and the HDF5 path one read of a hyperslab union.

        DataLoader calls this with a whole batch when it exists.  Duplicates and
        any order are allowed; the result equals ``[self[i] for i in indices]``.
        """
        file_numbers, rows = self.index.locate_many(indices)
        if self.layout == "rows":
            samples = self._read_rows_batch(file_numbers, rows, indices)
        else:
            samples = self._read_members_batch(file_numbers, rows, indices)
        if self.transform is not None:
            return [self.transform(sample) for sample in samples]
        return samples

    # -- pickling -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["pool"] = self.pool.empty_copy()
        return state

    def __repr__(self) -> str:
        return (
            f"PooledH5Dataset({len(self.files)} files, {len(self)} samples, "
            f"layout={self.layout!r}, keys={list(self.keys)!r}, pool={self.pool!r})"
        )

    # -- internals ------------------------------------------------------------------------

    def _acquire(self, file_number: int) -> PooledFile:
        path = self.index.files[file_number]
        try:
            return self.pool.acquire(path)
        except MissingFileError as exc:
            raise MissingFileError(
                f"{path}: file was indexed but no longer exists (deleted after indexing?)",
                path=path,
            ) from exc

    def _verify_unchanged(self, entry: PooledFile, file_number: int) -> None:
        """Refuse a file that was replaced or rewritten since it was indexed.

        Checked once per opened handle, never per sample.
        """
        expected = (int(self.index.sizes[file_number]), int(self.index.mtimes[file_number]))
        found = entry.stamp()
        if found != expected:
            raise FileChangedError(
                f"{entry.path}: file changed since it was indexed "
                f"(size, mtime_ns) was {expected}, now {found}; rebuild the dataset",
                path=entry.path,
            )

    def _readers(self, entry: PooledFile, file_number: int) -> tuple[RowReader, ...]:
        readers: tuple[RowReader, ...] | None = entry.memo.get(self._memo_key)
        if readers is None:
            self._verify_unchanged(entry, file_number)
            readers = tuple(RowReader(entry, key) for key in self.keys)
            expected = int(self.index.counts[file_number])
            for reader in readers:
                if reader.length != expected:
                    raise FileChangedError(
                        f"{entry.path}: {reader.key!r} has {reader.length} rows, "
                        f"the index has {expected}; rebuild the dataset",
                        path=entry.path,
                    )
            entry.memo[self._memo_key] = readers
        return readers

    def _read_member(self, entry: PooledFile, file_number: int, local: int) -> Sample:
        attrs_by_name: dict[str, dict[str, Any]] | None = entry.memo.get(self._memo_key)
        if attrs_by_name is None:
            self._verify_unchanged(entry, file_number)
            attrs_by_name = entry.memo[self._memo_key] = {}
        name = self.index.member_name(file_number, local)
        path = f"{self.group.rstrip('/')}/{name}"
        data = read_member(entry, path)
        attrs = attrs_by_name.get(name)
        if attrs is None:
            attrs = attrs_by_name[name] = decode_attrs(entry.dataset(path))
        return {"data": to_tensor(data), "attrs": dict(attrs)}

    def _read_rows_batch(
        self, file_numbers: IntArray, rows: IntArray, indices: Indices
    ) -> list[Any]:
        """Read a batch file by file, in (file, row) order, straight into its slots.

        Each key gets one output array in request order; each file's rows land
        in it directly (no gather copy), and the samples are views of it.
        """
        count = len(file_numbers)
        if not count:
            return []
        order = np.lexsort((rows, file_numbers))
        bounds = [0, *(np.flatnonzero(np.diff(file_numbers[order])) + 1).tolist(), count]
        sorted_rows = rows[order].tolist()
        sorted_files = file_numbers[order].tolist()
        positions = order.tolist()
        outputs: dict[str, npt.NDArray[Any]] = {}
        output_bytes: dict[str, memoryview] = {}
        for begin, end in itertools.pairwise(bounds):
            file_number = sorted_files[begin]
            try:
                entry = self._acquire(file_number)
                try:
                    for reader in self._readers(entry, file_number):
                        out = outputs.get(reader.key)
                        if out is None:
                            out = outputs[reader.key] = reader.empty_rows(count)
                            if reader.direct and out.nbytes:
                                output_bytes[reader.key] = out.data.cast("B")
                        elif out.shape[1:] != reader.row_shape or out.dtype != reader.dtype:
                            # Files disagree on shape or dtype: no shared array.
                            return [self[i] for i in np.asarray(indices).reshape(-1).tolist()]
                        reader.read_rows_into(
                            sorted_rows[begin:end],
                            positions[begin:end],
                            out,
                            output_bytes.get(reader.key),
                        )
                finally:
                    self.pool.release(entry)
            except CorpusError as exc:
                first = int(np.asarray(indices).reshape(-1)[positions[begin]])
                raise _naming_sample(exc, first) from (exc.__cause__ or exc)
        columns = [(key, _rows_of(to_tensor(out))) for key, out in outputs.items()]
        if len(columns) == 1:
            key, column = columns[0]
            return [{key: row} for row in column]
        return [{key: column[i] for key, column in columns} for i in range(count)]

    def _read_members_batch(
        self, file_numbers: IntArray, rows: IntArray, indices: Indices
    ) -> list[Any]:
        samples: list[Any] = [None] * len(file_numbers)
        order = np.argsort(file_numbers, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(file_numbers[order])) + 1):
            if not len(group):
                continue
            file_number = int(file_numbers[group[0]])
            try:
                entry = self._acquire(file_number)
                try:
                    for position, local in zip(group.tolist(), rows[group].tolist(), strict=True):
                        samples[position] = self._read_member(entry, file_number, local)
                finally:
                    self.pool.release(entry)
            except CorpusError as exc:
                first = int(np.asarray(indices).reshape(-1)[group[0]])
                raise _naming_sample(exc, first) from (exc.__cause__ or exc)
        return samples


def _rows_of(column: Any) -> Sequence[Any]:
    """The rows of a batch column as views: ``unbind`` for tensors, a list for numpy."""
    return column.unbind(0) if isinstance(column, torch.Tensor) else list(column)


def _naming_sample(exc: CorpusError, index: int) -> CorpusError:
    """The same error class, with the global sample index in front of the message."""
    if str(exc).startswith("sample "):
        return exc
    return type(exc)(f"sample {index}: {exc}", path=exc.path)


def _load_index_cache(path: str | os.PathLike[str] | None) -> CorpusIndex | None:
    if path is None or not os.path.exists(path):
        return None
    try:
        return CorpusIndex.load(path)
    except Exception as exc:
        logger.warning("h5pool: ignoring unreadable index cache %s: %s", path, exc)
        return None

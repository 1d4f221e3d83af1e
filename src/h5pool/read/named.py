"""Samples of the "members" and "groups" layouts: one named object per sample.

Why apart from the dataset: the "rows" layout reads through the read engine;
these layouts read a whole member, or a window of a group, through h5py and
turn it into values by the same rules (:func:`h5pool.read.values.array_values`).
Attributes are decoded once per open handle, not once per sample.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from h5pool._typing import Indices, IntArray, Sample
from h5pool.errors import CorpusError, LayoutError, ReadError
from h5pool.hdf5.readers import decode_attrs, read_member
from h5pool.index.corpus_index import CorpusIndex
from h5pool.index.groups import read_group_sample
from h5pool.index.opening import acquire_indexed
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.pooled_file import PooledFile
from h5pool.read.sample_errors import naming_sample
from h5pool.read.values import Strings, array_values


@dataclass
class NamedSamples:
    """Reads sample ``local`` of a file in the "members" or "groups" layout."""

    index: CorpusIndex
    layout: str
    group: str
    keys: tuple[str, ...]
    window: int
    #: Where per-handle attribute memos go in ``PooledFile.memo``.
    memo_key: tuple[str, str] = field(
        default_factory=lambda: ("h5pool.read.named", uuid.uuid4().hex)
    )

    def read(self, entry: PooledFile, file_number: int, local: int, strings: Strings) -> Sample:
        attrs_memo: dict[str, dict[str, Any]] | None = entry.memo.get(self.memo_key)
        if attrs_memo is None:  # a new handle: the file must be the one indexed
            self.index.check_unchanged(entry, file_number)
            attrs_memo = entry.memo[self.memo_key] = {}
        try:
            if self.layout == "members":
                return self._member(entry, file_number, local, strings, attrs_memo)
            return self._window(entry, file_number, local, strings, attrs_memo)
        except CorpusError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:  # a damaged chunk, say
            where = self.index.member_name(file_number, self._group_number(file_number, local))
            raise ReadError(
                f"{entry.path}: reading {self.group.rstrip('/')}/{where} failed: {exc}",
                path=entry.path,
            ) from exc

    def read_one(self, pool: HandlePool, file_number: int, local: int, strings: Strings) -> Sample:
        """Sample ``local`` of file ``file_number``, the file pinned for the read."""
        entry = acquire_indexed(pool, self.index, file_number)
        try:
            return self.read(entry, file_number, local, strings)
        finally:
            pool.release(entry)

    def read_many(
        self,
        pool: HandlePool,
        file_numbers: IntArray,
        rows: IntArray,
        indices: Indices,
        strings: Strings,
    ) -> list[Sample]:
        """The samples of a batch in request order, each file pinned once for all
        its samples; an error names the first sample of the file that failed."""
        samples: list[Any] = [None] * len(file_numbers)
        order = np.argsort(file_numbers, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(file_numbers[order])) + 1):
            if not len(group):
                continue
            file_number = int(file_numbers[group[0]])
            try:
                entry = acquire_indexed(pool, self.index, file_number)
                try:
                    for position, local in zip(group.tolist(), rows[group].tolist(), strict=True):
                        samples[position] = self.read(entry, file_number, local, strings)
                finally:
                    pool.release(entry)
            except CorpusError as exc:
                first = int(np.asarray(indices).reshape(-1)[group[0]])
                raise naming_sample(exc, first) from (exc.__cause__ or exc)
        return samples

    def _group_number(self, file_number: int, local: int) -> int:
        if self.layout == "members":
            return local
        return self.index.groups.locate(file_number, local)[0]

    def _member(
        self,
        entry: PooledFile,
        file_number: int,
        local: int,
        strings: Strings,
        attrs_by_name: dict[str, dict[str, Any]],
    ) -> Sample:
        name = self.index.member_name(file_number, local)
        path = f"{self.group.rstrip('/')}/{name}"
        data = read_member(entry, path)
        attrs = attrs_by_name.get(name)
        if attrs is None:
            attrs = attrs_by_name[name] = decode_attrs(entry.dataset(path))
        return {**array_values("data", data, strings), "attrs": dict(attrs)}

    def _window(
        self,
        entry: PooledFile,
        file_number: int,
        local: int,
        strings: Strings,
        attrs_by_group: dict[str, dict[str, Any]],
    ) -> Sample:
        group_number, start = self.index.groups.locate(file_number, local)
        name = self.index.member_name(file_number, group_number)
        path = f"{self.group.rstrip('/')}/{name}"
        arrays = read_group_sample(entry, path, self.keys, start, self.window, attrs_by_group)
        sample: Sample = {}
        for key in self.keys:
            sample.update(array_values(key, arrays[key], strings))
        sample["attrs"] = arrays["attrs"]
        return sample


def stack_samples(samples: list[Sample], keys: Sequence[str]) -> dict[str, Any]:
    """Windows stacked per key, ``{key: tensor (B, W, ...), "attrs": [dict, ...]}``.

    Values that are not arrays (a window of strings is a ``list[str]``) are
    collected in a list, one per sample.  Whole groups of unequal lengths
    cannot be stacked: a :class:`LayoutError` that says to set ``window``.
    """
    if not samples:
        return {**{key: np.empty(0) for key in keys}, "attrs": []}
    batch: dict[str, Any] = {}
    for key in (name for name in samples[0] if name != "attrs"):
        columns = [sample[key] for sample in samples]
        if not all(isinstance(column, torch.Tensor | np.ndarray) for column in columns):
            batch[key] = columns
            continue
        shapes = {tuple(column.shape) for column in columns}
        if len(shapes) > 1:
            raise LayoutError(
                f"{key!r} has samples of shapes {sorted(shapes)[:2]} in one batch; "
                "set window= to read windows of equal length"
            )
        batch[key] = (
            torch.stack(columns) if isinstance(columns[0], torch.Tensor) else np.stack(columns)
        )
    batch["attrs"] = [sample["attrs"] for sample in samples]
    return batch

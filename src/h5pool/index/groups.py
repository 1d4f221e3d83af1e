"""The "groups" layout: one group per sample (a robot demonstration), or windows of it.

robomimic, LIBERO and most imitation-learning files keep one group per
demonstration, ``data/demo_k/actions``, ``data/demo_k/obs/<camera>``, each with
its own length ``T`` along axis 0.  The index keeps, per file, how many groups
it has (their names go in :class:`~h5pool.index.member_names.MemberNames`, a template for
``demo_0 ... demo_{n-1}``) and, per group, ``T``: O(files + groups), never one
entry per window.  A sample is a whole group, or with ``window=W, stride=S``
the rows ``[t, t + W)`` of every key for ``t = 0, S, 2S, ...`` with
``t + W <= T``; windows are numbered by arithmetic on ``T``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from h5pool._typing import IntArray
from h5pool.errors import LayoutError, MissingKeyError
from h5pool.hdf5.readers import (
    check_filters_available,
    check_fits_in_file,
    decode_attrs,
    nbytes_of,
)
from h5pool.index.listing import natural_key
from h5pool.pool.pooled_file import PooledFile


@dataclass
class GroupTable:
    """Groups per file and the length ``T`` of every group, with the windowing."""

    per_file: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lengths: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    window: int = 0
    stride: int = 1
    _firsts: IntArray | None = field(default=None, repr=False, compare=False)
    _samples: IntArray = field(
        default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.per_file = np.asarray(self.per_file, dtype=np.int64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.window < 0 or self.stride < 1:
            raise ValueError(
                f"window must be >= 0 and stride >= 1, not {self.window}, {self.stride}"
            )

    def samples_per_group(self) -> IntArray:
        """1 per group without a window; else the windows that fit in ``T``."""
        if not self.window:
            return np.ones(len(self.lengths), dtype=np.int64)
        fitting = (self.lengths - self.window) // self.stride + 1
        return np.maximum(fitting, 0)

    def file_counts(self) -> IntArray:
        """Samples per file: the sum of its groups' samples."""
        owner = np.repeat(np.arange(len(self.per_file)), self.per_file)
        summed = np.bincount(owner, weights=self.samples_per_group(), minlength=len(self.per_file))
        return summed.astype(np.int64)

    def locate(self, file_number: int, local: int) -> tuple[int, int]:
        """``(group number within the file, first row)`` of a file's ``local`` sample."""
        if self._firsts is None:
            self._firsts = np.cumsum(self.per_file) - self.per_file
            self._samples = self.samples_per_group()
        first = int(self._firsts[file_number])
        samples = self._samples[first : first + int(self.per_file[file_number])]
        ends = np.cumsum(samples)
        group = int(np.searchsorted(ends, local, side="right"))
        within = local - int(ends[group] - samples[group])
        return group, within * self.stride

    @property
    def nbytes(self) -> int:
        return int(self.per_file.nbytes + self.lengths.nbytes)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the lookup caches, which each process rebuilds."""
        state = dict(self.__dict__)
        state["_firsts"], state["_samples"] = None, np.zeros(0, np.int64)
        return state


def open_group(entry: PooledFile, group: str) -> h5py.Group:
    """The group ``group`` of the file, or a :class:`MissingKeyError` naming both."""
    try:
        node = entry.file[group]
    except KeyError as exc:
        raise MissingKeyError(
            f"{entry.path}: no group {group!r} in the file", path=entry.path
        ) from exc
    if not isinstance(node, h5py.Group):
        raise MissingKeyError(f"{entry.path}: {group!r} is not a group", path=entry.path)
    return node


def group_names(entry: PooledFile, group: str) -> list[str]:
    """The groups directly under ``group``, in natural order of their names."""
    node = open_group(entry, group)
    names = [name for name in node if node.get(name, getclass=True) is h5py.Group]
    return sorted(names, key=natural_key)


def group_length(entry: PooledFile, group_path: str, keys: Sequence[str]) -> int:
    """``T``: the length of axis 0 shared by every key of one group."""
    lengths: dict[str, int] = {}
    for key in keys:
        try:
            dataset = entry.dataset(f"{group_path}/{key}")
        except MissingKeyError as exc:
            raise MissingKeyError(
                f"{entry.path}: group {group_path!r} has no dataset {key!r}", path=entry.path
            ) from exc
        if dataset.ndim == 0:
            raise LayoutError(
                f"{entry.path}: {group_path}/{key} is a scalar; windows need axis 0",
                path=entry.path,
            )
        lengths[key] = int(dataset.shape[0])
        check_fits_in_file(
            dataset, entry.path, nbytes_of(dataset, 1), f"a row of {group_path}/{key}"
        )
        check_filters_available(dataset, entry.path, f"{group_path}/{key}")
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
        raise LayoutError(
            f"{entry.path}: group {group_path!r} has keys of unequal lengths ({described})",
            path=entry.path,
        )
    return next(iter(lengths.values()))


def read_group_sample(
    entry: PooledFile,
    group_path: str,
    keys: Sequence[str],
    start: int,
    window: int,
    attrs_by_group: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """``{key: array, "attrs": dict}``: rows ``[start, start + window)`` of each key,
    or the whole group when ``window`` is 0.  A group's attributes are decoded
    once per open handle (into ``attrs_by_group``), not once per window."""
    sample: dict[str, Any] = {}
    for key in keys:
        dataset = entry.dataset(f"{group_path}/{key}")
        sample[key] = np.asarray(dataset[start : start + window] if window else dataset[()])
    attrs = attrs_by_group.get(group_path)
    if attrs is None:
        attrs = attrs_by_group[group_path] = decode_attrs(entry.file[group_path])
    sample["attrs"] = dict(attrs)
    return sample

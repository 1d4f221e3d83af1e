"""``h5pool check``: read every byte of every dataset through HDF5, and say which
files are damaged.

Why through HDF5 and not h5pool's own readers: HDF5 verifies what the file
itself can prove (metadata checksums in files written with ``libver="latest"``,
``fletcher32`` checksums of chunks), and decodes every filter.  What no reader
can prove is also said in the README: a flipped bit in raw data without a
checksum reads back as a wrong value, here as in plain h5py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from h5pool.errors import CorpusError
from h5pool.pool.handle_pool import HandlePool

logger = logging.getLogger(__name__)
#: Bytes read at a time from one dataset: bounded memory for any dataset size.
BLOCK_BYTES = 64 * 2**20


@dataclass
class FileCheck:
    """What checking one file found: datasets read, bytes read, problems."""

    path: str
    datasets: int = 0
    bytes_read: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_file(path: str, storage_options: Mapping[str, Any] | None = None) -> FileCheck:
    """Open ``path`` and read every dataset and attribute in full."""
    result = FileCheck(path)
    pool = HandlePool(1, storage_options=storage_options)
    try:
        entry = pool.acquire(path)
    except (CorpusError, OSError) as exc:
        result.problems.append(str(exc))
        return result
    try:
        for name, dataset in _datasets(entry.file, result):
            result.datasets += 1
            try:
                for block in _blocks(dataset):
                    result.bytes_read += block.nbytes
                for attribute in dataset.attrs:
                    dataset.attrs[attribute]
            except Exception as exc:  # any failure HDF5 reports is the finding
                kind = _failure_kind(dataset, exc)
                result.problems.append(f"{path}: dataset {name!r}: {kind}: {exc}")
    finally:
        pool.release(entry)
        pool.close()
    return result


def _failure_kind(dataset: h5py.Dataset, exc: Exception) -> str:
    text = str(exc).lower()
    if "checksum" in text:
        return "checksum failed"
    if dataset.fletcher32 and "filter returned failure" in text:
        return "fletcher32 checksum (or another filter) failed"
    return "cannot be read"


def _datasets(file: h5py.File, result: FileCheck) -> Iterator[tuple[str, h5py.Dataset]]:
    names: list[str] = []

    def visit(name: str) -> None:
        names.append(name)

    try:
        file.visit_links(visit)
    except Exception as exc:
        result.problems.append(f"{result.path}: the file's groups cannot be walked: {exc}")
    for name in names:
        try:
            node = file.get(name)
        except Exception as exc:
            result.problems.append(f"{result.path}: {name!r} cannot be opened: {exc}")
            continue
        if isinstance(node, h5py.Dataset):
            yield name, node


def _blocks(dataset: h5py.Dataset) -> Iterator[np.ndarray[Any, Any]]:
    """The dataset in blocks of whole chunk rows, about ``BLOCK_BYTES`` each."""
    shape = dataset.shape
    if shape is None:
        return
    if not shape:
        yield np.asarray(dataset[()])
        return
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * max(1, dataset.dtype.itemsize))
    rows = max(1, BLOCK_BYTES // row_bytes)
    if dataset.chunks:
        step = dataset.chunks[0]
        rows = max(step, rows // step * step)
    for start in range(0, shape[0], rows):
        yield np.asarray(dataset[start : start + rows])

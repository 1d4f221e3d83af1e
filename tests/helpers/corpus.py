"""Helpers shared by the tests and by the scripts they run in subprocesses.

Every row encodes where it came from: ``value = file_number * 1000 + row`` in
every column, so a test can check that a sample is the right one, not merely
that the count is right.  float32 holds these integers exactly for up to 16,000
files of up to 1,000 rows.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import get_worker_info

from h5pool import CorpusIndex


def encoded(file_number: int, row: int) -> int:
    return file_number * 1000 + row


def write_rows_file(
    path: str | os.PathLike[str],
    file_number: int,
    rows: int,
    width: int = 8,
    *,
    dtype: Any = "float32",
    chunks: Any = None,
    compression: str | None = None,
    extra_keys: Sequence[str] = ("label",),
) -> None:
    values = np.array([encoded(file_number, r) for r in range(rows)], dtype=np.int64)
    with h5py.File(path, "w") as f:
        data = np.repeat(values[:, None], width, axis=1).astype(dtype)
        f.create_dataset("data", data=data, chunks=chunks, compression=compression)
        for key in extra_keys:
            f.create_dataset(key, data=values)


def make_corpus(
    directory: str | os.PathLike[str],
    files: int,
    rows: int,
    width: int = 8,
    **kwargs: Any,
) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = []
    for number in range(files):
        path = os.path.join(directory, f"shard_{number:05d}.h5")
        write_rows_file(path, number, rows, width, **kwargs)
        paths.append(path)
    return paths


def index_of_counts(counts: list[int]) -> CorpusIndex:
    """A real CorpusIndex for files with these sample counts (no files behind it)."""
    n = len(counts)
    return CorpusIndex(
        files=[f"/corpus/f{i}.h5" for i in range(n)],
        counts=np.array(counts),
        layout="rows",
        keys=("data",),
        group="/",
        sizes=np.arange(n, dtype=np.int64),
        mtimes=np.arange(n, dtype=np.int64) * 7,
    )


def decode_sample(sample: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(file_number, row) of a rows-layout sample, after checking it is self-consistent."""
    label = int(sample["label"])
    data = sample["data"]
    assert bool((data == float(label)).all()), f"data {data} does not match label {label}"
    return divmod(label, 1000)


_collected_in = -1


def open_hdf5_descriptors(*, once_per_process: bool = False) -> int:
    """HDF5 files this process has open, from /proc/self/fd: the kernel's count.

    Collects garbage first, so that pools of earlier tests awaiting collection
    do not change the count in the middle of a test; once per process when
    called from DataLoader workers, where a collection per batch is slow.
    """
    if not once_per_process or _collected_in != os.getpid():
        gc.collect()
        globals()["_collected_in"] = os.getpid()
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".h5"):
            count += 1
    return count


def collate_with_worker_stats(batch: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Collate labels and report, from inside the worker, what its pool holds."""
    info = get_worker_info()
    stats = info.dataset.pool.stats() if info is not None else None  # type: ignore[union-attr]
    return {
        "labels": [int(sample["label"]) for sample in batch],
        "data_ok": all(bool((s["data"] == float(s["label"])).all()) for s in batch),
        "worker": info.id if info is not None else -1,
        "pid": os.getpid(),
        "peak_open": stats.peak_open_files if stats else 0,
        "max_open": stats.max_open if stats else 0,
        "fd_open": open_hdf5_descriptors(once_per_process=True),
        "misses": stats.misses if stats else 0,
    }

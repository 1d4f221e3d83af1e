"""A synthetic corpus for ``h5pool bench`` and the benchmark suite.

Each row holds ``file_number * rows + row`` in every column, so a reader that
returned another file's row would be caught, not just timed.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
from tqdm.auto import tqdm

DEFAULT_FILES = 2000
DEFAULT_ROWS = 64
DEFAULT_WIDTH = 1024


def make_corpus(
    directory: str | os.PathLike[str],
    files: int = DEFAULT_FILES,
    rows: int = DEFAULT_ROWS,
    width: int = DEFAULT_WIDTH,
    *,
    key: str = "data",
    progress: bool = False,
) -> list[str]:
    """Write ``files`` HDF5 files of ``rows`` x ``width`` float32 rows (contiguous)."""
    os.makedirs(directory, exist_ok=True)
    digits = len(str(max(files - 1, 1)))
    base = np.arange(rows, dtype=np.float32)[:, None] * np.ones(width, dtype=np.float32)
    paths = []
    for number in tqdm(range(files), desc="writing corpus", unit="file", disable=not progress):
        path = os.path.join(os.fspath(directory), f"shard_{number:0{digits}d}.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset(key, data=base + np.float32(number * rows))
            f.create_dataset("label", data=np.arange(rows, dtype=np.int64) + number * rows)
        paths.append(path)
    return paths

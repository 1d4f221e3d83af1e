"""A synthetic corpus for ``h5pool bench`` and the benchmark suite.

Each row holds ``file_number * rows + row`` in every column (plus, for the
compressed storage, a fraction below 0.5 of quantised noise so that gzip has
real work to do), so a reader that returned another file's row would be
caught, not just timed.

Storage kinds:

* ``contiguous``: float32 rows, the layout the direct ``pread`` path serves;
* ``gzip``: the same rows chunked ``(8, width)``, gzip level 4 with shuffle;
* ``images``: ``(64, 64, 3)`` uint8 images under ``image``, one per gzip chunk.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from h5pool.progress import progress_bar

DEFAULT_FILES = 2000
DEFAULT_ROWS = 64
DEFAULT_WIDTH = 1024
STORAGE_KINDS = ("contiguous", "gzip", "images")
IMAGE_SHAPE = (64, 64, 3)


def make_corpus(
    directory: str | os.PathLike[str],
    files: int = DEFAULT_FILES,
    rows: int = DEFAULT_ROWS,
    width: int = DEFAULT_WIDTH,
    *,
    key: str = "data",
    progress: bool = False,
    storage: str = "contiguous",
) -> list[str]:
    """Write ``files`` HDF5 files of ``rows`` samples each, stored as ``storage`` says."""
    if storage not in STORAGE_KINDS:
        raise ValueError(f"storage must be one of {STORAGE_KINDS}, not {storage!r}")
    os.makedirs(directory, exist_ok=True)
    digits = len(str(max(files - 1, 1)))
    base = np.arange(rows, dtype=np.float32)[:, None] * np.ones(width, dtype=np.float32)
    rng = np.random.default_rng(0)
    paths = []
    for number in progress_bar(progress, iterable=range(files), desc="writing corpus", unit="file"):
        path = os.path.join(os.fspath(directory), f"shard_{number:0{digits}d}.h5")
        with h5py.File(path, "w") as f:
            if storage == "contiguous":
                f.create_dataset(key, data=base + np.float32(number * rows))
            elif storage == "gzip":
                noise = np.round(rng.random(base.shape, dtype=np.float32) * 64) / 128
                f.create_dataset(
                    key,
                    data=base + np.float32(number * rows) + noise.astype(np.float32),
                    chunks=(min(8, rows), width),
                    compression="gzip",
                    compression_opts=4,
                    shuffle=True,
                )
            else:
                f.create_dataset(
                    "image" if key == "data" else key,
                    data=_images(rng, rows, number),
                    chunks=(1, *IMAGE_SHAPE),
                    compression="gzip",
                    compression_opts=4,
                )
            f.create_dataset("label", data=np.arange(rows, dtype=np.int64) + number * rows)
        paths.append(path)
    return paths


def _images(rng: np.random.Generator, count: int, number: int) -> np.ndarray:
    """Smooth gradients with noise: they compress about as well as photographs."""
    y, x = np.mgrid[0 : IMAGE_SHAPE[0], 0 : IMAGE_SHAPE[1]]
    images = np.empty((count, *IMAGE_SHAPE), dtype=np.uint8)
    for index in range(count):
        phase = (number * count + index) % 256
        for channel in range(IMAGE_SHAPE[2]):
            smooth = (x * (channel + 1) + y * 2 + phase) % 256
            images[index, :, :, channel] = smooth + rng.integers(0, 24, smooth.shape)
    return images

"""h5pool: serve corpora of thousands of HDF5 files to PyTorch, fast and fork-safe."""

from h5pool.dataset import PooledH5Dataset
from h5pool.errors import (
    AccessDeniedError,
    CorpusError,
    DescriptorLimitError,
    FileChangedError,
    LayoutError,
    MissingFileError,
    MissingKeyError,
    NoFilesFoundError,
    ReadError,
    SourceUnavailableError,
    UnreadableFileError,
)
from h5pool.index import CorpusIndex
from h5pool.loader import Loader
from h5pool.pool import HandlePool, PooledFile, PoolStats, default_max_open, raise_fd_limit
from h5pool.sampler import BlockShuffleSampler

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "BlockShuffleSampler",
    "CorpusError",
    "CorpusIndex",
    "DescriptorLimitError",
    "FileChangedError",
    "HandlePool",
    "LayoutError",
    "Loader",
    "MissingFileError",
    "MissingKeyError",
    "NoFilesFoundError",
    "PoolStats",
    "PooledFile",
    "PooledH5Dataset",
    "ReadError",
    "SourceUnavailableError",
    "UnreadableFileError",
    "__version__",
    "default_max_open",
    "raise_fd_limit",
]

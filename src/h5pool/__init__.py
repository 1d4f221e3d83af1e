"""h5pool: serve corpora of thousands of HDF5 files to PyTorch, fast and fork-safe.

The names below are imported on first use (PEP 562), so that ``h5pool --help``
and a mistyped option answer at once instead of after importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "PooledH5Dataset": "h5pool.dataset",
    "Loader": "h5pool.loading.loader",
    "BlockShuffleSampler": "h5pool.loading.sampler",
    "CorpusIndex": "h5pool.index.corpus_index",
    "HandlePool": "h5pool.pool.handle_pool",
    "PooledFile": "h5pool.pool.pooled_file",
    "PoolStats": "h5pool.pool.lru",
    "default_max_open": "h5pool.pool.descriptors",
    "raise_fd_limit": "h5pool.pool.descriptors",
    "AccessDeniedError": "h5pool.errors",
    "CorpusError": "h5pool.errors",
    "DescriptorLimitError": "h5pool.errors",
    "FileChangedError": "h5pool.errors",
    "LayoutError": "h5pool.errors",
    "MissingFileError": "h5pool.errors",
    "MissingKeyError": "h5pool.errors",
    "NoFilesFoundError": "h5pool.errors",
    "ReadError": "h5pool.errors",
    "SourceUnavailableError": "h5pool.errors",
    "UnreadableFileError": "h5pool.errors",
    "pad_ragged": "h5pool.read.values",
    "collate_ragged": "h5pool.read.values",
}

#: Modules that moved into a subpackage, still reached by their old name
#: (``from h5pool import synthetic``).
_MODULES = {"synthetic": "h5pool.bench.synthetic"}

if TYPE_CHECKING:
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
    from h5pool.index.corpus_index import CorpusIndex
    from h5pool.loading.loader import Loader
    from h5pool.loading.sampler import BlockShuffleSampler
    from h5pool.pool.descriptors import default_max_open, raise_fd_limit
    from h5pool.pool.handle_pool import HandlePool
    from h5pool.pool.lru import PoolStats
    from h5pool.pool.pooled_file import PooledFile
    from h5pool.read.values import collate_ragged, pad_ragged


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        module = _MODULES.get(name, f"h5pool.{name}")
        try:  # subpackages and modules: h5pool.bench, h5pool.synthetic, ...
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a dependency of a real module is missing: say so
                raise
            raise AttributeError(f"module 'h5pool' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


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
    "collate_ragged",
    "default_max_open",
    "pad_ragged",
    "raise_fd_limit",
]

"""``h5pool bench``: h5pool against the recipes people write by hand, in one run.

The strategies are named in :mod:`h5pool.bench.registry` and imported only
when they run (they import torch); :mod:`h5pool.bench.synthetic` writes the
corpus they read.  The submodules are imported on first use (PEP 562), so
``from h5pool.bench import synthetic`` costs no torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["chunked", "common", "loaders", "recipes", "registry", "run", "synthetic"]


def __getattr__(name: str) -> ModuleType:
    if name not in __all__:
        raise AttributeError(f"module 'h5pool.bench' has no attribute {name!r}")
    return importlib.import_module(f"h5pool.bench.{name}")

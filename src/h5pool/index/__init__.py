"""The index layer: which files make the corpus and which samples each holds.

Lists the files (folders, globs, URLs), scans each one (in processes) for its
sample count and byte maps, merges the scans into a :class:`CorpusIndex` of
numpy arrays, and keeps it in an index cache.  :func:`obtain_index` is the one
entry point, for the dataset and the command line alike.  No torch here.
"""

from h5pool._typing import FileSpec
from h5pool.index.cache import IndexCacheError
from h5pool.index.corpus_index import CorpusIndex, Layout
from h5pool.index.listing import HDF5_SUFFIXES, expand_files, natural_key
from h5pool.index.obtain import VERIFY_MODES, Verify, obtain_index
from h5pool.index.paths import PathList
from h5pool.index.scan import ScanStats, build_index

__all__ = [
    "HDF5_SUFFIXES",
    "VERIFY_MODES",
    "CorpusIndex",
    "FileSpec",
    "IndexCacheError",
    "Layout",
    "PathList",
    "ScanStats",
    "Verify",
    "build_index",
    "expand_files",
    "natural_key",
    "obtain_index",
]

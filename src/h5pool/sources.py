"""Turn what the user passes as ``files`` into the ordered list of HDF5 paths.

The order is part of the index (sample ``i`` depends on it), so it must be the
same in every process and on every run: directory and glob matches are sorted
naturally (``shard_2`` before ``shard_10``), sequences keep the caller's order.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable, Sequence

from h5pool.errors import MissingFileError, NoFilesFoundError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
FileSpec = PathLike | Sequence[PathLike]

HDF5_SUFFIXES = (".h5", ".hdf5", ".he5", ".hdf")
_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders embedded numbers by value: ``a2`` < ``a10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part
    )


def expand_files(files: FileSpec) -> list[str]:
    """Resolve paths, directories and glob patterns to absolute real paths.

    Duplicates (the same file reached twice) are kept once, at their first
    position, so that every sample is served exactly once per epoch.
    """
    specs: Iterable[PathLike]
    specs = [files] if isinstance(files, (str, os.PathLike)) else files
    resolved: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        for path in _expand_one(os.fspath(spec)):
            real = os.path.realpath(path)
            if real in seen:
                logger.info("h5pool: %s is listed more than once; keeping the first", real)
                continue
            seen.add(real)
            resolved.append(real)
    if not resolved:
        raise NoFilesFoundError(f"no HDF5 files given: {files!r}")
    return resolved


def _expand_one(spec: str) -> list[str]:
    spec = os.path.expanduser(spec)
    if os.path.isdir(spec):
        found = [
            os.path.join(root, name)
            for root, _dirs, names in os.walk(spec, followlinks=True)
            for name in names
            if name.lower().endswith(HDF5_SUFFIXES)
        ]
        if not found:
            raise NoFilesFoundError(
                f"{spec}: directory contains no HDF5 files (*{', *'.join(HDF5_SUFFIXES)})",
                path=spec,
            )
        return sorted(found, key=natural_key)
    if os.path.exists(spec):
        return [spec]
    if _GLOB_CHARS.search(spec):
        matches = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
        if not matches:
            raise NoFilesFoundError(f"{spec}: glob pattern matched no files", path=spec)
        return sorted(matches, key=natural_key)
    raise MissingFileError(f"{spec}: no such file or directory", path=spec)

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
from collections.abc import Callable, Iterable, Sequence

from h5pool._typing import FileSpec, PathLike
from h5pool.errors import CorpusError, MissingFileError, NoFilesFoundError, UnreadableFileError
from h5pool.pool.remote import Filesystems, is_url, protocol_of, remote_error
from h5pool.progress import progress_bar

logger = logging.getLogger(__name__)

#: What a folder listing picks up: HDF5, HDF-EOS, netCDF-4 and AnnData files.
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nc", ".nc4", ".h5ad")

_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders embedded numbers by value: ``a2`` < ``a10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part
    )


class Listing(list[str]):
    """The resolved paths, and which of them a folder or glob found (not named)."""

    listed: frozenset[str] = frozenset()


def expand_files(
    files: FileSpec,
    filesystems: Filesystems | None = None,
    *,
    progress: bool = False,
    suffixes: Sequence[str] | None = None,
) -> Listing:
    """Resolve paths, directories and glob patterns to absolute real paths.

    URLs (``s3://bucket/prefix/``, globs of them, ...) are listed through
    fsspec with ``filesystems`` and kept as URLs.

    Duplicates (the same file reached twice) are kept once, at their first
    position, so that every sample is served exactly once per epoch.
    """
    specs: Iterable[PathLike]
    specs = [files] if isinstance(files, (str, os.PathLike)) else files
    wanted = tuple(s.lower() for s in suffixes) if suffixes is not None else HDF5_SUFFIXES
    resolver = _RealPaths()
    resolved = Listing()
    listed: set[str] = set()
    seen: set[str] = set()
    bar = progress_bar(progress, desc="listing", unit="file")
    for spec in specs:
        text = os.fspath(spec)
        if is_url(text):
            expanded = _expand_url(text, filesystems or Filesystems(None), wanted)
            named = not text.endswith("/") and not _GLOB_CHARS.search(text) and expanded == [text]
        else:
            expanded = _expand_one(text, resolver, wanted, bar.update)
            named = not os.path.isdir(os.path.expanduser(text)) and not _GLOB_CHARS.search(text)
        if not named:
            listed.update(expanded)
        if not os.path.isdir(text):
            bar.update(len(expanded))
        for real in expanded:
            if real in seen:
                logger.info("h5pool: %s is listed more than once; keeping the first", real)
                continue
            seen.add(real)
            resolved.append(real)
    bar.close()
    resolved.listed = frozenset(listed)
    if not resolved:
        raise NoFilesFoundError(f"no HDF5 files given: {files!r}")
    return resolved


class _RealPaths:
    """``realpath`` for many files in few folders: each folder is resolved once.

    ``os.path.realpath`` checks every component of every path (four ``lstat``
    calls for ``/data/corpus/shard.h5``); with the folder resolved once, a file
    costs one ``lstat`` to see whether it is itself a link.  On 100,000 files
    that is the difference between seconds and a fraction of one.
    """

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def folder(self, folder: str) -> str:
        real = self._folders.get(folder)
        if real is None:
            real = self._folders[folder] = os.path.realpath(folder)
        return real

    def __call__(self, path: str, *, is_link: bool | None = None) -> str:
        folder, name = os.path.split(os.path.abspath(path))
        joined = os.path.join(self.folder(folder), name)
        if is_link is None:
            is_link = os.path.islink(joined)
        return os.path.realpath(joined) if is_link else joined


def _walk_hdf5(
    root: str,
    resolver: _RealPaths,
    suffixes: tuple[str, ...],
    found_more: Callable[[int], object],
) -> list[str]:
    """Every HDF5 file under ``root``, ordered by where it sits in the tree.

    Linked folders are followed (once each, so a link back up the tree cannot
    loop); files are ordered by their path as seen from ``root``, not by
    where their links point.
    """
    found: list[tuple[str, str]] = []
    # Paths as seen from root, relative to it: a shorter natural-sort key, same order.
    pending = [("", resolver.folder(root))]
    visited: set[str] = set()
    while pending:
        shown, real_folder = pending.pop()
        if real_folder in visited:
            continue
        visited.add(real_folder)
        before = len(found)
        with os.scandir(real_folder) as entries:
            for entry in entries:
                shown_path = shown + entry.name
                if entry.is_dir():
                    target = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
                    pending.append((shown_path + "/", target))
                elif entry.name.lower().endswith(suffixes):
                    # The folder is a real path, so a file that is no link is one too.
                    real = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
                    found.append((shown_path, real))
        found_more(len(found) - before)
    found.sort(key=lambda pair: natural_key(pair[0]))
    return [real for _, real in found]


def _expand_one(
    spec: str,
    resolver: _RealPaths,
    suffixes: tuple[str, ...] = HDF5_SUFFIXES,
    found_more: Callable[[int], object] = lambda n: None,
) -> list[str]:
    spec = os.path.expanduser(spec)
    if os.path.isdir(spec):
        found = _walk_hdf5(spec, resolver, suffixes, found_more)
        if not found:
            raise NoFilesFoundError(
                f"{spec}: directory contains no HDF5 files (*{', *'.join(suffixes)})",
                path=spec,
            )
        return found
    if os.path.exists(spec):
        if not os.path.isfile(spec):  # a FIFO would block the open: refuse it by name
            raise UnreadableFileError(f"{spec}: not a regular file, not an HDF5 file", path=spec)
        return [resolver(spec)]
    if _GLOB_CHARS.search(spec):
        matches = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
        if not matches:
            raise NoFilesFoundError(f"{spec}: glob pattern matched no files", path=spec)
        return [resolver(p) for p in sorted(matches, key=natural_key)]
    raise MissingFileError(f"{spec}: no such file or directory", path=spec)


def _expand_url(
    spec: str, filesystems: Filesystems, suffixes: tuple[str, ...] = HDF5_SUFFIXES
) -> list[str]:
    """A URL of a file, a "directory" prefix or a glob, as sorted file URLs."""
    filesystem = filesystems.for_url(spec)
    protocol = protocol_of(spec)
    try:
        if any(ch in spec for ch in "*?["):
            found = [p for p in filesystem.glob(spec) if not filesystem.isdir(p)]
            what = "glob pattern matched no files"
        elif spec.endswith("/") or filesystem.isdir(spec):
            found = [p for p in filesystem.find(spec) if p.lower().endswith(suffixes)]
            what = "prefix contains no HDF5 files"
        elif filesystem.exists(spec):
            return [spec]
        else:
            raise MissingFileError(f"{spec}: no such object", path=spec)
    except CorpusError:
        raise
    except Exception as exc:
        raise remote_error(spec, exc) from exc
    if not found:
        raise NoFilesFoundError(f"{spec}: {what}", path=spec)
    urls = [p if "://" in p else f"{protocol}://{p}" for p in found]
    return sorted(urls, key=natural_key)

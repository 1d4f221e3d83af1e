"""How a dataset gets its index: from the cache as ``verify`` allows, or by scanning.

The three ``verify`` modes trade start-up metadata operations against what a
start can notice by itself.  Every mode still checks each file's size and
mtime when the file is opened for reading, so a file replaced or rewritten
after indexing raises :class:`~h5pool.errors.FileChangedError` instead of
giving wrong samples; what differs is whether that is found at start-up (and
the file rescanned) or at the first read (and the read refused).

- ``"stat"`` (default): list the files and ``stat`` each one; new or changed
  files are scanned, removed ones dropped.  Cannot notice a change that keeps
  both size and mtime.
- ``"listing"``: list the files but ``stat`` none of those the cache knows;
  new files are scanned, removed ones dropped.  A file changed in place is
  found at its first read (``FileChangedError``).
- ``"trust"``: neither list nor ``stat``: the cache is the corpus, if it was
  built from the same ``files`` argument.  New files are not seen, a removed
  file is a ``MissingFileError`` at its first read, a changed one a
  ``FileChangedError``.  O(1) metadata operations: for a million files on a
  parallel file system.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Literal

from h5pool._typing import FileSpec
from h5pool.index.cache import IndexCacheError, cache_lock
from h5pool.index.corpus_index import CorpusIndex, Layout, read_cache, save_index
from h5pool.index.listing import HDF5_SUFFIXES, expand_files
from h5pool.index.scan import ScanStats, build_index
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.remote import is_url

logger = logging.getLogger(__name__)

Verify = Literal["trust", "listing", "stat"]
VERIFY_MODES: tuple[Verify, ...] = ("trust", "listing", "stat")
Skipped = list[tuple[str, str]]


def source_of(files: FileSpec, suffixes: Sequence[str] | None = None) -> str:
    """What ``files`` said, as text: a cache is trusted only for the same words."""
    specs = [files] if isinstance(files, str | os.PathLike) else list(files)
    given = [os.fspath(s) if is_url(os.fspath(s)) else os.path.abspath(s) for s in specs]
    listed = list(suffixes) if suffixes is not None else list(HDF5_SUFFIXES)
    return json.dumps({"files": given, "suffixes": listed})


def obtain_index(
    files: FileSpec,
    *,
    layout: Layout,
    keys: Sequence[str],
    group: str,
    pool: HandlePool,
    cache: str | os.PathLike[str] | None = None,
    verify: Verify = "stat",
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool = False,
    scan_processes: int | None = None,
    suffixes: Sequence[str] | None = None,
) -> tuple[CorpusIndex, Skipped, ScanStats]:
    """The index of ``files``: from ``cache`` as far as ``verify`` allows, else scanned.

    This is what :class:`~h5pool.PooledH5Dataset` and ``h5pool index`` both
    call; it needs no torch.

    Parameters
    ----------
    files
        Paths, folders, globs or URLs, as the dataset takes them.
    layout
        ``"rows"``, ``"members"`` or ``"groups"``.
    keys
        The datasets of a sample (see :class:`~h5pool.PooledH5Dataset`).
    group
        The group whose members or subgroups are the samples.
    pool
        The pool that lists and scans the files; left with files open, for the
        caller to close.
    cache
        The index cache file, or ``None`` for none.
    verify
        ``"trust"``, ``"listing"`` or ``"stat"``: see this module.
    on_error
        ``"skip"`` leaves out files that fail the scan, with their reasons.
    progress
        Show progress bars for the listing and the scan.
    scan_processes
        Processes that scan the files (``None``: by the number of files).
    suffixes
        What a folder listing picks up (default :data:`HDF5_SUFFIXES`).

    Returns
    -------
    tuple
        The index, the skipped files as ``(path, reason)`` pairs, and the scan's counters.

    Raises
    ------
    CorpusError
        A file that cannot be listed or scanned (with ``on_error="raise"``).  A
        cache that cannot be written is a warning: the index is built uncached.
    ValueError
        An unknown ``verify``, or a ``cache`` that is a folder.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    keys = tuple(keys)

    def list_files() -> list[str]:
        return expand_files(files, pool.filesystems, progress=progress, suffixes=suffixes)

    def build(
        paths: list[str], cached: CorpusIndex | None, restat: bool
    ) -> tuple[CorpusIndex, Skipped, ScanStats]:
        return build_index(
            paths,
            layout=layout,
            keys=keys,
            group=group,
            pool=pool,
            on_error=on_error,
            progress=progress,
            reuse=cached,
            restat=restat,
            processes=scan_processes,
        )

    if cache is None:
        return _verified(build(list_files(), None, True))
    if os.path.isdir(cache):
        raise ValueError(
            f"index_cache {os.fspath(cache)!r} is a folder; give a file path such as "
            f"{os.path.join(os.fspath(cache), 'index.npz')!r}"
        )
    config = (layout, keys, group)
    source = source_of(files, suffixes)
    unwritable = why_unwritable(cache)
    # A cache nobody can write needs no lock: it can only be read.
    with contextlib.nullcontext() if unwritable else cache_lock(cache):
        cached, meta = _usable_cache(cache, config)
        skipped_before: Skipped = [(str(p), str(r)) for p, r in meta.get("skipped", [])]
        if cached is not None and verify == "trust":
            if meta.get("source") == source:
                logger.info("h5pool: index cache %s trusted (verify='trust')", cache)
                return cached, skipped_before, ScanStats(files_reused=len(cached.files))
            logger.warning(
                "h5pool: index cache %s was built from other files; listing them (verify='trust' "
                "trusts a cache only for the same files argument)",
                cache,
            )
        paths = list_files()
        if (
            cached is not None
            and verify == "listing"
            and _same_listing(cached, skipped_before, paths)
        ):
            return cached, skipped_before, ScanStats(files_reused=len(cached.files))
        index, skipped, stats = build(paths, cached, verify != "listing")
        if verify == "stat":
            index.verified_at = time.monotonic()
        stale = cached is None or not cached.same_entries(index) or meta.get("source") != source
        if stale and unwritable:
            _warn_once(
                cache,
                f"h5pool: index cache {os.fspath(cache)}: {unwritable}; "
                "the index is built without caching it",
            )
        elif stale:
            _save(index, cache, {"source": source, "skipped": skipped})
        return index, skipped, stats


def _verified(
    found: tuple[CorpusIndex, Skipped, ScanStats],
) -> tuple[CorpusIndex, Skipped, ScanStats]:
    """Every stamp of a fresh scan was just read from the storage."""
    found[0].verified_at = time.monotonic()
    return found


def why_unwritable(cache: str | os.PathLike[str]) -> str:
    """Why the index cache cannot be written, or ``""`` when it can.

    Asked before the scan, so an unwritable cache costs a warning, not a
    scan thrown away.  The folder is tried by creating a file in it, which
    tells the truth on read-only mounts and ACLs where ``os.access`` guesses.
    """
    folder = os.path.dirname(os.path.abspath(cache))
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".h5pool-probe-")
    except OSError as exc:
        return f"the folder {folder} cannot be written ({exc.strerror or exc})"
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return ""


_WARNED: set[str] = set()


def _warn_once(cache: str | os.PathLike[str], message: str) -> None:
    """One warning per cache and process: a Loader's ranks and restarts say it once each."""
    name = os.path.abspath(cache)
    if name not in _WARNED:
        _WARNED.add(name)
        logger.warning("%s", message)


def _usable_cache(
    cache: str | os.PathLike[str], config: tuple[str, tuple[str, ...], str]
) -> tuple[CorpusIndex | None, dict[str, Any]]:
    try:
        index, meta = read_cache(cache)
    except FileNotFoundError:
        return None, {}
    except IndexCacheError as exc:
        logger.warning("h5pool: %s; rebuilding it", exc)
        return None, {}
    if (index.layout, index.keys, index.group) != config:
        logger.warning(
            "h5pool: index cache %s was built for layout %r, keys %s, group %r, not layout %r, "
            "keys %s, group %r; rebuilding it (give each configuration its own cache file)",
            os.fspath(cache),
            index.layout,
            list(index.keys),
            index.group,
            config[0],
            list(config[1]),
            config[2],
        )
        return None, {}
    return index, meta


def _same_listing(cached: CorpusIndex, skipped: Skipped, paths: Sequence[str]) -> bool:
    """True when ``paths`` are the cache's files plus the files it skipped."""
    left_out = {path for path, _ in skipped}
    listed = [path for path in paths if path not in left_out]
    return len(listed) == len(cached.files) and cached.files == listed


def _save(index: CorpusIndex, cache: str | os.PathLike[str], extra: dict[str, Any]) -> None:
    """Write the cache; a failure (a full disk) is a warning: the index is built."""
    try:
        save_index(index, cache, extra)
    except OSError as exc:
        _warn_once(
            cache,
            f"h5pool: cannot write the index cache {os.fspath(cache)} ({exc}); "
            "the index is built but not cached",
        )

"""Scanning files into a :class:`~h5pool.index.corpus_index.CorpusIndex`, in parallel processes.

Why processes: HDF5 serialises every call within a process behind one lock, so
threads scan no faster than one; each process scans a contiguous slice of the
files through a pool of one handle (files are touched once here, and HDF5
slows every open in proportion to the files it holds).  The scanning pools are
not the dataset's, so the dataset's read statistics start from zero.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import h5py
import numpy as np
import numpy.typing as npt

from h5pool.errors import CorpusError, UnreadableFileError
from h5pool.hdf5.byte_map import KeyMaps
from h5pool.index.corpus_index import CorpusIndex, Layout
from h5pool.index.groups import GroupTable
from h5pool.index.member_names import MemberNames
from h5pool.index.merge import combine
from h5pool.index.paths import PathList
from h5pool.index.scan_one import FileEntry, scan_file
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.remote import is_url
from h5pool.pool.remote_prefetch import prefetch
from h5pool.progress import progress_bar

logger = logging.getLogger(__name__)
#: Below this many files to scan, starting processes costs more than it saves.
PARALLEL_SCAN_MIN_FILES = 256
Outcome = Any  # a FileEntry, or the CorpusError/OSError that scanning raised


@dataclass(frozen=True)
class ScanRecipe:
    """What a scanning process needs: picklable, so it crosses into processes."""

    layout: Layout
    keys: tuple[str, ...]
    group: str
    pool: HandlePool
    skip_bad_groups: bool = False

    def scan(self, paths: Sequence[str]) -> tuple[list[Outcome], int]:
        """Scan ``paths``; return what each gave, and how many HDF5 opens it took."""
        pool = self.pool.empty_copy()
        outcomes: list[Outcome] = []
        remote = [path for path in paths if is_url(path)]
        if remote:  # every object's details and first bytes in one concurrent round
            prefetch(remote, pool.filesystems)
        try:
            for path in paths:
                try:
                    outcomes.append(
                        scan_file(
                            pool,
                            path,
                            self.layout,
                            self.keys,
                            self.group,
                            skip_bad_groups=self.skip_bad_groups,
                        )
                    )
                except (CorpusError, OSError) as exc:
                    outcomes.append(_portable(exc, path))
        finally:
            pool.close()
        return outcomes, pool.stats().hdf5_opens


def _portable(exc: BaseException, path: str) -> CorpusError | OSError:
    """The error as it pickles: OSErrors from h5py lose nothing, others keep the text."""
    if isinstance(exc, CorpusError | OSError):
        return exc
    return UnreadableFileError(f"{path}: {exc}", path=path)


def scan_pool(pool: HandlePool) -> HandlePool:
    """A pool of one handle with ``pool``'s settings: what a scan runs through."""
    state = pool.__getstate__()
    state["max_open"] = 1
    scanner = HandlePool.__new__(HandlePool)
    scanner.__setstate__(state)
    return scanner


def default_scan_processes(files: int) -> int:
    """One process per core, up to 8, once there are enough files to pay for them."""
    if files < PARALLEL_SCAN_MIN_FILES:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


@dataclass
class ScanStats:
    """What building an index cost, kept apart from the dataset's read counters."""

    files_scanned: int = 0
    files_reused: int = 0
    processes: int = 1
    hdf5_opens: int = 0
    seconds: float = 0.0


def scan_outcomes(
    recipe: ScanRecipe, paths: Sequence[str], processes: int, progress: bool, stats: ScanStats
) -> Iterator[Outcome]:
    """Scan ``paths`` (in their order), in ``processes`` processes when more than one."""
    stats.files_scanned = len(paths)
    stats.processes = processes if processes > 1 and len(paths) > 1 else 1
    bar = progress_bar(progress, total=len(paths), desc="indexing", unit="file")
    if processes <= 1 or len(paths) < 2:
        outcomes: list[Outcome] = []
        for start in range(0, len(paths), 64):
            done, opens = recipe.scan(paths[start : start + 64])
            outcomes.extend(done)
            stats.hdf5_opens += opens
            bar.update(len(done))
        bar.close()
        return iter(outcomes)
    # Slices of a few hundred files: large enough to amortise the round trip,
    # small enough that the progress bar moves and the processes finish together.
    size = max(1, min(512, math.ceil(len(paths) / (processes * 4))))
    slices = [paths[start : start + size] for start in range(0, len(paths), size)]
    results: list[list[Outcome]] = []
    with ProcessPoolExecutor(processes, mp_context=_context()) as executor:
        for done, opens in executor.map(recipe.scan, slices):
            results.append(done)
            stats.hdf5_opens += opens
            bar.update(len(done))
    bar.close()
    return (outcome for done in results for outcome in done)


def _context() -> multiprocessing.context.BaseContext:
    """fork when no HDF5 file is open here (cheap, and safe then), forkserver otherwise."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and h5py.h5f.get_obj_count(types=h5py.h5f.OBJ_FILE) == 0:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def build_index(
    files: Sequence[str],
    *,
    layout: Layout,
    keys: Sequence[str],
    group: str,
    pool: HandlePool,
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool = False,
    reuse: CorpusIndex | None = None,
    restat: bool = True,
    processes: int | None = None,
) -> tuple[CorpusIndex, list[tuple[str, str]], ScanStats]:
    """Scan ``files`` and return the index, the skipped files and the scan's counters.

    ``reuse`` is an earlier index (e.g. loaded from a cache file): a file it
    holds is taken from it without being opened, when its size and mtime are
    unchanged (``restat=True``) or without looking (``restat=False``).
    The files left to scan are scanned in ``processes`` processes (default:
    :func:`default_scan_processes`), each through a pool of one handle.
    """
    # A file a folder or glob found that is not HDF5 at all (a netCDF-3 ".nc") is
    # left out with its reason; named explicitly, it is an error.
    listed: frozenset[str] = getattr(files, "listed", frozenset())
    numbers = _reusable_numbers(reuse, files, layout, keys, group, pool, restat)
    pending = [files[i] for i in np.flatnonzero(numbers < 0).tolist()]
    if reuse is not None and pending:
        logger.info("h5pool: index cache: scanning %d new or changed files", len(pending))
    if processes is None:
        processes = default_scan_processes(len(pending))
    recipe = ScanRecipe(layout, tuple(keys), group, scan_pool(pool), on_error == "skip")
    stats = ScanStats(files_reused=len(files) - len(pending))
    began = time.perf_counter()
    scanned = scan_outcomes(recipe, pending, processes, progress, stats)
    source = (numbers < 0).astype(np.int64)  # 0: from the cache, 1: scanned now
    kept = np.ones(len(files), dtype=bool)
    entries: list[FileEntry] = []
    skipped: list[tuple[str, str]] = []
    for position in np.flatnonzero(source).tolist():
        outcome: Outcome = next(scanned)
        if isinstance(outcome, BaseException):
            if on_error == "raise" and not _foreign(outcome, files[position], listed):
                raise outcome
            logger.warning("h5pool: skipping %s", outcome)
            skipped.append((files[position], str(outcome)))
            kept[position] = False
            continue
        numbers[position] = len(entries)
        entries.append(outcome)
        for name, reason in outcome.left_out:
            logger.warning("h5pool: skipping group %s of %s: %s", name, files[position], reason)
            skipped.append((f"{files[position]}::{name}", reason))
    stats.seconds = time.perf_counter() - began
    if not kept.any():
        raise CorpusError(f"none of the {len(files)} files could be indexed: {skipped[0][1]}")
    fresh = _index_of_entries(
        [files[i] for i in np.flatnonzero(kept & (source == 1)).tolist()],
        entries,
        layout,
        keys,
        group,
    )
    source, numbers = source[kept], numbers[kept]
    if (
        reuse is not None
        and not source.any()
        and np.array_equal(numbers, np.arange(len(reuse.files)))
    ):
        return reuse, skipped, stats
    if reuse is None or not (source == 0).any():
        return fresh, skipped, stats  # nothing taken from the cache: the scan is the index
    return combine([reuse, fresh], source, numbers), skipped, stats


def _index_of_entries(
    files: list[str], entries: list[FileEntry], layout: Layout, keys: Sequence[str], group: str
) -> CorpusIndex:
    return CorpusIndex(
        files=PathList(files),
        counts=np.array([e.count for e in entries], dtype=np.int64),
        layout=layout,
        keys=tuple(keys),
        group=group,
        sizes=np.array([e.size for e in entries], dtype=np.int64),
        mtimes=np.array([e.mtime for e in entries], dtype=np.int64),
        members=MemberNames.from_files([e.members for e in entries])
        if layout in ("members", "groups")
        else MemberNames.empty(),
        groups=GroupTable(
            per_file=np.array([len(e.lengths) for e in entries], dtype=np.int64),
            lengths=np.array([n for e in entries for n in e.lengths], dtype=np.int64),
        )
        if layout == "groups"
        else GroupTable(),
        maps={
            key: KeyMaps.from_files([e.maps[number] for e in entries])
            for number, key in enumerate(keys)
        }
        if layout == "rows"
        else {},
    )


def _foreign(error: BaseException, path: str, listed: frozenset[str]) -> bool:
    not_hdf5 = isinstance(error, UnreadableFileError) and "not an HDF5 file" in str(error)
    return not_hdf5 and path in listed


def _reusable_numbers(
    reuse: CorpusIndex | None,
    files: Sequence[str],
    layout: Layout,
    keys: Sequence[str],
    group: str,
    pool: HandlePool,
    restat: bool,
) -> npt.NDArray[np.int64]:
    """For each of ``files``, its number in ``reuse`` when it can be taken from it
    (unchanged, when ``restat``), else -1: the files to scan."""
    if reuse is None or (reuse.layout, reuse.keys, reuse.group) != (layout, tuple(keys), group):
        return np.full(len(files), -1, dtype=np.int64)
    positions = {path: number for number, path in enumerate(reuse.files)}
    numbers = np.fromiter((positions.get(p, -1) for p in files), dtype=np.int64, count=len(files))
    if not restat:
        return numbers
    changed = 0
    for position in np.flatnonzero(numbers >= 0).tolist():
        number = int(numbers[position])
        try:
            now = pool.stamp(files[position])
        except (OSError, CorpusError):
            numbers[position] = -1
            continue
        if now != (int(reuse.sizes[number]), int(reuse.mtimes[number])):
            numbers[position] = -1
            changed += 1
            if changed <= 10:
                logger.info("h5pool: index cache: %s changed since it was indexed", files[position])
    return numbers

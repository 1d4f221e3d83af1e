"""What one file holds for a layout: its sample count, stamp, byte maps or names.

Every check the dataset relies on runs here, once per file at indexing: keys
of equal length, no scalars, data inside the file, regular files only, member
names (netCDF's dimension scales left out), demonstration groups and their
lengths.  ``h5pool info --key`` runs the same function, so a corpus it calls
clean builds as a dataset.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

import h5py

from h5pool.errors import LayoutError, MissingKeyError, UnreadableFileError
from h5pool.hdf5.byte_map import CHUNKED, CONTIGUOUS, HDF5, FileKeyMap, map_dataset
from h5pool.hdf5.readers import check_filters_available, check_fits_in_file, nbytes_of
from h5pool.index.corpus_index import Layout
from h5pool.index.groups import group_length, group_names, open_group
from h5pool.index.listing import natural_key
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.pooled_file import PooledFile
from h5pool.pool.remote import is_url


@dataclass(frozen=True)
class FileEntry:
    """What scanning one file found."""

    count: int
    size: int
    mtime: int
    members: tuple[str, ...] = ()
    maps: tuple[FileKeyMap, ...] = ()
    #: "groups" layout: each group's length, and the groups left out with why.
    lengths: tuple[int, ...] = ()
    left_out: tuple[tuple[str, str], ...] = ()


def member_names(entry: PooledFile, group: str) -> list[str]:
    """The datasets directly under ``group``, in natural sort order."""
    node = open_group(entry, group)
    names = [
        name
        for name, link in node.items()
        if isinstance(link, h5py.Dataset) and not _is_dimension_scale(link)
    ]
    if not names:
        subgroups = any(isinstance(link, h5py.Group) for link in node.values())
        hint = "; it holds groups: use layout='groups'" if subgroups else ""
        raise LayoutError(f"{entry.path}: group {group!r} holds no datasets{hint}", path=entry.path)
    return sorted(names, key=natural_key)


def _is_dimension_scale(dataset: h5py.Dataset) -> bool:
    """netCDF's coordinate variables: HDF5 dimension scales, never samples."""
    kind = dataset.attrs.get("CLASS")
    return bool(kind is not None and bytes(kind).rstrip(b"\0") == b"DIMENSION_SCALE")


def count_rows(entry: PooledFile, keys: Sequence[str]) -> int:
    """Length of axis 0 shared by every key, or a :class:`LayoutError`."""
    lengths: dict[str, int] = {}
    for key in keys:
        dataset = entry.dataset(key)
        if dataset.ndim == 0:
            raise LayoutError(
                f"{entry.path}: dataset {key!r} is a scalar; the 'rows' layout needs axis 0",
                path=entry.path,
            )
        lengths[key] = int(dataset.shape[0])
        check_fits_in_file(dataset, entry.path, nbytes_of(dataset, 1), f"a row of {key!r}")
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
        hint = (
            "; netCDF stores a variable along an unlimited dimension only as far as it "
            "was written and pads it with its fill value when read, which h5pool does not"
            if any("DIMENSION_LIST" in entry.dataset(key).attrs for key in keys)
            else ""
        )
        raise LayoutError(
            f"{entry.path}: keys have unequal lengths on axis 0 ({described}){hint}",
            path=entry.path,
        )
    return next(iter(lengths.values()))


def scan_file(
    pool: HandlePool,
    path: str,
    layout: Layout,
    keys: Sequence[str],
    group: str,
    *,
    skip_bad_groups: bool = False,
) -> FileEntry:
    size, mtime = pool.stamp(path)
    if not is_url(path):
        refuse_irregular(path)
    entry = pool.acquire(path, resolved=True)  # listed paths are real paths already
    try:
        if layout == "rows":
            count = count_rows(entry, keys)
            remote = is_url(path)
            local = pool.plain_descriptor or remote
            maps = tuple(_map_key(entry, key, local, remote) for key in keys)
            for key, file_map in zip(keys, maps, strict=True):
                _check_inside(path, key, file_map, count, size)
                if file_map.spec.kind == HDF5:  # h5pool decodes the others itself
                    check_filters_available(entry.dataset(key), path, repr(key))
            return FileEntry(count, size, mtime, maps=maps)
        if layout == "groups":
            return _scan_groups(entry, keys, group, (size, mtime), skip_bad_groups)
        names = member_names(entry, group)
        return FileEntry(len(names), size, mtime, tuple(names))
    except RuntimeError as exc:  # libhdf5 failures h5py raises as RuntimeError
        raise UnreadableFileError(
            f"{path}: HDF5 could not read its metadata: {exc}", path=path
        ) from exc
    finally:
        pool.release(entry)


def _scan_groups(
    entry: PooledFile,
    keys: Sequence[str],
    group: str,
    stamp: tuple[int, int],
    skip_bad: bool,
) -> FileEntry:
    names: list[str] = []
    lengths: list[int] = []
    left_out: list[tuple[str, str]] = []
    for name in group_names(entry, group):
        try:
            lengths.append(group_length(entry, f"{group.rstrip('/')}/{name}", keys))
        except (MissingKeyError, LayoutError) as exc:
            if not skip_bad:
                raise
            left_out.append((name, str(exc)))
            continue
        names.append(name)
    return FileEntry(
        len(names), *stamp, tuple(names), lengths=tuple(lengths), left_out=tuple(left_out)
    )


def refuse_irregular(path: str) -> None:
    """Only regular files are opened: a FIFO named ``x.h5`` would block the open."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise UnreadableFileError(f"{path}: {kind}, not an HDF5 file", path=path)


def _check_inside(path: str, key: str, file_map: FileKeyMap, rows: int, size: int) -> None:
    """Every byte a byte map points at lies inside the file, or the file is damaged."""
    spec = file_map.spec
    if spec.kind == CONTIGUOUS:
        end = file_map.offset + rows * spec.row_nbytes()
    elif spec.kind == CHUNKED and len(file_map.chunks):
        written = file_map.chunks[file_map.chunks[:, 0] >= 0]
        end = int((written[:, 0] + written[:, 1]).max()) if len(written) else 0
    else:
        return
    if end > size:
        raise UnreadableFileError(
            f"{path}: {key!r} claims bytes up to offset {end:,} of a {size:,}-byte file "
            f"(truncated or damaged)",
            path=path,
        )


def _map_key(entry: PooledFile, key: str, local: bool, remote: bool) -> FileKeyMap:
    """The key's byte map; a dataset HDF5 cannot describe is an unreadable file."""
    dataset = entry.dataset(key)
    try:
        return map_dataset(dataset, entry.path, local=local, root=entry.file if remote else None)
    except Exception as exc:
        raise UnreadableFileError(
            f"{entry.path}: cannot read the storage of {key!r}: {exc}", path=entry.path
        ) from exc

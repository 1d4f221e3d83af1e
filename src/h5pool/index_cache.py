"""The index cache file: compact, written atomically, validated, shared by ranks.

Why each property:

- *compact*: paths are a common root plus packed remainders, and the arrays are
  compressed, so a million files cost tens of megabytes, not hundreds;
- *atomic*: it is written to a temporary file in the same folder and moved into
  place with ``os.replace``, so a reader never sees half a file;
- *validated*: a checksum over every array and consistency checks (lengths,
  non-negative counts, map positions inside their tables) run on load, and a
  cache that fails any of them is rebuilt with a warning, never trusted;
- *shared*: construction holds an exclusive lock on ``<cache>.lock`` while it
  reads, builds and writes, so of 64 ranks starting together one scans and the
  others wait, then read what it wrote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool.byte_map import CHUNKED, KeyMaps, KeySpec, chunk_grid
from h5pool.errors import CorpusError
from h5pool.groups import GroupTable
from h5pool.index import CorpusIndex
from h5pool.members import MemberNames
from h5pool.paths import PathList

logger = logging.getLogger(__name__)
INDEX_FORMAT_VERSION = 3


class IndexCacheError(CorpusError, ValueError):
    """An index cache that cannot be used: another format, damaged, inconsistent."""


def save_index(
    index: CorpusIndex, path: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> None:
    """Write ``index`` (and ``extra`` JSON metadata) to ``path`` atomically."""
    arrays = _arrays_of(index)
    meta = {
        "version": INDEX_FORMAT_VERSION,
        "layout": index.layout,
        "keys": list(index.keys),
        "group": index.group,
        "root": index.files.root,
        "specs": {key: [s.to_json() for s in m.specs] for key, m in index.maps.items()},
        "map_keys": list(index.maps),
        "checksum": _checksum(arrays),
        **(extra or {}),
    }
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez_compressed(out, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def load_index(path: str | os.PathLike[str]) -> CorpusIndex:
    return read_cache(path)[0]


def read_cache(path: str | os.PathLike[str]) -> tuple[CorpusIndex, dict[str, Any]]:
    """The cached index and its metadata; :class:`IndexCacheError` when unusable."""
    name = os.fspath(path)
    try:
        with np.load(name, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            if not isinstance(meta, dict) or meta.get("version") != INDEX_FORMAT_VERSION:
                found = meta.get("version") if isinstance(meta, dict) else None
                raise IndexCacheError(
                    f"{name}: index cache format {found}, this h5pool writes "
                    f"{INDEX_FORMAT_VERSION}",
                    path=name,
                )
            arrays = {key: saved[key] for key in saved.files if key != "meta"}
    except FileNotFoundError:
        raise
    except IndexCacheError:
        raise
    except Exception as exc:  # zip, npy, JSON and key errors of a damaged file
        raise IndexCacheError(f"{name}: unreadable index cache: {exc}", path=name) from exc
    if meta.get("checksum") != _checksum(arrays):
        raise IndexCacheError(f"{name}: index cache checksum does not match", path=name)
    try:
        index = _index_of(meta, arrays)
        _check_consistent(index)
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexCacheError(f"{name}: inconsistent index cache: {exc}", path=name) from exc
    return index, meta


@contextlib.contextmanager
def cache_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (processes on other hosts too,
    where the file system supports ``flock``); without locks, go on unlocked."""
    lock_path = os.fspath(path) + ".lock"
    try:
        handle = open(lock_path, "a+b")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        logger.warning("h5pool: cannot create %s (%s); building without a lock", lock_path, exc)
        yield
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            logger.warning(
                "h5pool: %s cannot be locked (%s); ranks may each build the index", lock_path, exc
            )
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -- the file's arrays --------------------------------------------------------------


def _arrays_of(index: CorpusIndex) -> dict[str, npt.NDArray[Any]]:
    _, blob, offsets = index.files.arrays()
    arrays: dict[str, npt.NDArray[Any]] = {
        "paths_blob": blob,
        "paths_offsets": offsets,
        "counts": index.counts,
        "sizes": index.sizes,
        "mtimes": index.mtimes,
    }
    if index.layout in ("members", "groups"):
        arrays.update(index.members.arrays())
    if index.layout == "groups":
        arrays["groups_per_file"] = index.groups.per_file
        arrays["groups_lengths"] = index.groups.lengths
    for number, key_maps in enumerate(index.maps.values()):
        arrays[f"map{number}_spec_ids"] = key_maps.spec_ids
        arrays[f"map{number}_positions"] = key_maps.positions
        arrays[f"map{number}_chunks"] = key_maps.chunks
    return arrays


def _checksum(arrays: dict[str, npt.NDArray[Any]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _index_of(meta: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> CorpusIndex:
    files = PathList.from_arrays(str(meta["root"]), arrays["paths_blob"], arrays["paths_offsets"])
    layout = meta["layout"]
    if layout not in ("rows", "members", "groups"):
        raise ValueError(f"unknown layout {layout!r}")
    maps = {
        key: KeyMaps(
            [KeySpec.from_json(s) for s in meta["specs"][key]],
            np.asarray(arrays[f"map{number}_spec_ids"], dtype=np.int32),
            np.asarray(arrays[f"map{number}_positions"], dtype=np.int64),
            np.asarray(arrays[f"map{number}_chunks"], dtype=np.int64).reshape(-1, 3),
        )
        for number, key in enumerate(meta["map_keys"])
    }
    named = layout in ("members", "groups")
    members = MemberNames.from_arrays(arrays, len(files)) if named else MemberNames.empty()
    groups = (
        GroupTable(arrays["groups_per_file"], arrays["groups_lengths"])
        if layout == "groups"
        else GroupTable()
    )
    return CorpusIndex(
        files=files,
        counts=arrays["counts"],
        layout=layout,
        keys=tuple(str(k) for k in meta["keys"]),
        group=str(meta["group"]),
        sizes=arrays["sizes"],
        mtimes=arrays["mtimes"],
        members=members,
        maps=maps,
        groups=groups,
    )


def _check_consistent(index: CorpusIndex) -> None:
    """Every check a damaged or hand-edited cache could fail; ValueError naming it."""
    files = len(index.files)
    for name in ("counts", "sizes", "mtimes"):
        array = getattr(index, name)
        if array.ndim != 1 or len(array) != files:
            raise ValueError(f"{name} has {array.shape} entries for {files} files")
    if files == 0:
        raise ValueError("no files")
    if bool(np.any(index.counts < 0)) or bool(np.any(index.sizes < 0)):
        raise ValueError("negative sample counts or sizes")
    if not set(index.maps) <= set(index.keys):
        raise ValueError("byte maps do not match the keys")
    for key, key_maps in index.maps.items():
        _check_maps(key, key_maps, index.counts)
    if index.layout == "members":
        _check_members(index.members, index.counts)
    if index.layout == "groups":
        per_file, lengths = index.groups.per_file, index.groups.lengths
        if len(per_file) != files or int(per_file.sum()) != len(lengths):
            raise ValueError("group counts do not match the group lengths")
        if bool(np.any(lengths < 0)) or not np.array_equal(index.counts, per_file):
            raise ValueError("negative group lengths, or sample counts that are not group counts")
        _check_members(index.members, per_file)


def _check_maps(key: str, maps: KeyMaps, counts: npt.NDArray[np.int64]) -> None:
    if len(maps.spec_ids) != len(counts) or len(maps.positions) != len(counts):
        raise ValueError(f"byte maps of {key!r} do not cover every file")
    if len(counts) and (maps.spec_ids.min() < 0 or maps.spec_ids.max() >= len(maps.specs)):
        raise ValueError(f"byte maps of {key!r} refer to an unknown storage")
    for number, spec in enumerate(maps.specs):
        if spec.kind != CHUNKED:
            continue
        chosen = maps.spec_ids == number
        rows = counts[chosen]
        per_row_chunks = int(np.prod(chunk_grid(spec, 1)[1:], dtype=np.int64))
        needed = -(-rows // spec.chunk_shape[0]) * per_row_chunks
        first = maps.positions[chosen]
        if bool(np.any(first < 0)) or bool(np.any(first + needed > len(maps.chunks))):
            raise ValueError(f"chunk tables of {key!r} are shorter than the files need")


def _check_members(members: MemberNames, counts: npt.NDArray[np.int64]) -> None:
    explicit = members.template_of < 0
    ends = members.first[explicit] + counts[explicit]
    if bool(np.any(members.first[explicit] < 0)) or bool(np.any(ends > len(members.explicit))):
        raise ValueError("member names are shorter than the counts need")

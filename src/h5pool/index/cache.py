"""The index cache file: compact, written atomically, validated, shared by ranks.

Why each property:

- *compact*: paths are a common root plus packed remainders, and the arrays are
  compressed, so a million files cost tens of megabytes, not hundreds;
- *atomic*: it is written to a temporary file in the same folder and moved into
  place with ``os.replace``, so a reader never sees half a file; its mode
  follows the umask, as any written file's does, so other users of a shared
  cluster can read it;
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
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool.errors import CorpusError
from h5pool.hdf5.byte_map import CHUNKED, KeyMaps, chunk_grid
from h5pool.index.member_names import MemberNames

logger = logging.getLogger(__name__)
INDEX_FORMAT_VERSION = 3
Arrays = dict[str, npt.NDArray[Any]]


class IndexCacheError(CorpusError, ValueError):
    """An index cache that cannot be used: another format, damaged, inconsistent."""


def write_arrays(path: str | os.PathLike[str], meta: dict[str, Any], arrays: Arrays) -> None:
    """Write ``arrays`` and the JSON ``meta`` (plus format version and checksum) to
    ``path`` atomically: a temporary file in the same folder, then ``os.replace``."""
    meta = {**meta, "version": INDEX_FORMAT_VERSION, "checksum": _checksum(arrays)}
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp"
    )
    try:
        os.fchmod(handle, 0o666 & ~current_umask())  # mkstemp makes 0600; others may read
        with os.fdopen(handle, "wb") as out:
            np.savez_compressed(out, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def current_umask() -> int:
    """The process umask, which can only be read by setting it (and back)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def read_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Arrays]:
    """The metadata and arrays of a cache file whose version and checksum match;
    :class:`IndexCacheError` otherwise (``FileNotFoundError`` when there is none)."""
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
    return meta, arrays


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


# -- checks of what was read ------------------------------------------------------


def _checksum(arrays: dict[str, npt.NDArray[Any]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_maps(key: str, maps: KeyMaps, counts: npt.NDArray[np.int64]) -> None:
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


def check_members(members: MemberNames, counts: npt.NDArray[np.int64]) -> None:
    explicit = members.template_of < 0
    ends = members.first[explicit] + counts[explicit]
    if bool(np.any(members.first[explicit] < 0)) or bool(np.any(ends > len(members.explicit))):
        raise ValueError("member names are shorter than the counts need")

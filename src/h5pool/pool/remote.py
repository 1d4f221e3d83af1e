"""Corpora behind fsspec URLs (``s3://bucket/prefix/file.h5`` and any other protocol).

Why a module of its own: a remote file is two objects (an fsspec file object and
the ``h5py.File`` reading through it), it must be reopened from a *recipe* (URL
and storage options) in every process, and fsspec's async filesystems are not
fork-safe (an inherited s3fs instance refuses to work, or hangs on the parent's
event loop).  So filesystem instances live per process, are made with
``skip_instance_cache=True`` (s3fs would otherwise hand back the parent's cached
instance), and are dropped, never closed, in a forked child.

fsspec is imported lazily: local corpora need no extra dependency.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import h5py

from h5pool.errors import (
    AccessDeniedError,
    CorpusError,
    MissingFileError,
    SourceUnavailableError,
    UnreadableFileError,
)
from h5pool.pool.remote_prefetch import PrefixedFile

logger = logging.getLogger(__name__)

#: How HDF5 reads a remote file.  HDF5 issues many small reads (superblock,
#: object headers, B-trees, then data); a block cache turns each into at most one
#: ranged GET per 1 MiB block and keeps the blocks it has seen, so metadata near
#: the start of the file and rows read again cost no request.  ``maxblocks``
#: bounds memory per open file (8 MiB; times ``max_open`` per process).
#: Measured against a local S3 server: see ``benchmarks/test_remote.py``.
DEFAULT_OPEN_OPTIONS: dict[str, Any] = {
    "cache_type": "blockcache",
    "block_size": 1 << 20,
    "cache_options": {"maxblocks": 8},
}

#: Bounded waiting for S3: a stopped or unreachable server must give an error,
#: not a hang.  botocore retries transient errors up to ``max_attempts`` times.
#: Its pool of 10 connections would cap the blocks in flight (16 by default).
S3_DEFAULT_OPTIONS: dict[str, Any] = {
    "config_kwargs": {
        "connect_timeout": 5,
        "read_timeout": 20,
        "retries": {"max_attempts": 3, "mode": "standard"},
        "max_pool_connections": 32,
    },
}

#: s3fs retries some errors itself, 5 times with growing sleeps by default; two
#: keep a stopped server's error within seconds.
S3_FILESYSTEM_RETRIES = 2


def is_url(path: str) -> bool:
    """True for fsspec URLs other than plain local files."""
    return "://" in path and not path.startswith("file://")


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0]


class Filesystems:
    """The fsspec filesystems of one process, one per protocol, made on first use."""

    def __init__(self, storage_options: Mapping[str, Any] | None) -> None:
        self.storage_options = dict(storage_options or {})
        self._by_protocol: dict[str, Any] = {}
        #: Objects' details and first bytes fetched together for a scan (see
        #: h5pool.pool.remote_prefetch), or the error fetching them gave.
        self.prefetched: dict[str, Any] = {}

    def for_url(self, url: str) -> Any:
        protocol = protocol_of(url)
        filesystem = self._by_protocol.get(protocol)
        if filesystem is None:
            import fsspec

            options: dict[str, Any] = {}
            if protocol in ("s3", "s3a"):
                options.update(S3_DEFAULT_OPTIONS)
            given = {k: v for k, v in self.storage_options.items() if k != "retries"}
            if isinstance(given.get("config_kwargs"), Mapping) and "config_kwargs" in options:
                # the user's botocore settings over h5pool's, not instead of them
                given["config_kwargs"] = {**options["config_kwargs"], **given["config_kwargs"]}
            options.update(given)
            filesystem = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
            if protocol in ("s3", "s3a"):
                filesystem.retries = self.storage_options.get("retries", S3_FILESYSTEM_RETRIES)
            self._by_protocol[protocol] = filesystem
        return filesystem


def open_remote(url: str, filesystems: Filesystems, open_options: Mapping[str, Any]) -> Any:
    """The fsspec file object for ``url``, opened for HDF5's access pattern."""
    options = dict(DEFAULT_OPEN_OPTIONS)
    if "cache_type" in open_options:
        del options["cache_options"]  # the default's options fit only the default's cache
    options.update(open_options)
    known = filesystems.prefetched.pop(url, None)
    if isinstance(known, BaseException):
        raise remote_error(url, known) from known
    try:
        filesystem = filesystems.for_url(url)
        if known is not None:  # the scan's prefix serves the metadata; no HEAD again
            details, prefix = known
            size = int(details.get("size") or 0)
            return PrefixedFile(
                prefix, details, lambda: filesystem.open(url, "rb", size=size, **options)
            )
        return filesystem.open(url, "rb", **options)
    except Exception as exc:
        raise remote_error(url, exc) from exc


@contextlib.contextmanager
def open_hdf5(path: str, filesystems: Filesystems) -> Iterator[h5py.File]:
    """An ``h5py.File`` for a local path or a URL, outside any pool (the naive recipes)."""
    if not is_url(path):
        with h5py.File(path, "r") as handle:
            yield handle
        return
    fileobj = open_remote(path, filesystems, {})
    try:
        with h5py.File(fileobj, "r") as handle:
            yield handle
    finally:
        fileobj.close()


def stamp_of_details(details: Mapping[str, Any]) -> tuple[int, int]:
    """(size, mtime in ns) from an fsspec ``info()`` dict, whatever the backend calls it."""
    size = int(details.get("size") or 0)
    when = details.get("LastModified") or details.get("mtime") or details.get("last_modified")
    if isinstance(when, datetime.datetime):
        mtime = int(when.timestamp() * 1e9)
    elif isinstance(when, (int, float)):
        mtime = int(when * 1e9)
    else:
        mtime = 0
    return size, mtime


def remote_stamp(url: str, filesystems: Filesystems) -> tuple[int, int]:
    known = filesystems.prefetched.get(url)
    if isinstance(known, BaseException):
        raise remote_error(url, known) from known
    if known is not None:
        return stamp_of_details(known[0])
    try:
        return stamp_of_details(filesystems.for_url(url).info(url))
    except Exception as exc:
        raise remote_error(url, exc) from exc


def remote_error(url: str, exc: BaseException) -> CorpusError:
    """The CorpusError that says what went wrong with ``url``."""
    if isinstance(exc, CorpusError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text or "NoSuchKey" in text:
        return MissingFileError(f"{url}: no such bucket or object ({text})", path=url)
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return AccessDeniedError(f"{url}: access denied ({text})", path=url)
    if _is_connection_problem(exc):
        return SourceUnavailableError(f"{url}: storage unreachable ({text})", path=url)
    return UnreadableFileError(f"{url}: cannot read as HDF5: {text}", path=url)


def _is_connection_problem(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if isinstance(current, (ConnectionError, TimeoutError)) or any(
            marker in name
            for marker in ("Connect", "Timeout", "ClientOSError", "ServerDisconnected")
        ):
            return True
        current = current.__cause__ or current.__context__
    return False

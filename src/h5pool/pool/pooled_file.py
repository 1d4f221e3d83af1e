"""One open file of a pool: an ``h5py.File``, a plain descriptor, or both.

Why apart from the pool: the pool decides *which* files stay open; a
:class:`PooledFile` is what a reader holds meanwhile, with the datasets looked
up through it, and the errors that say why a file would not open.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from typing import Any

import h5py

from h5pool.errors import CorpusError, MissingFileError, MissingKeyError, UnreadableFileError
from h5pool.pool.descriptors import is_emfile
from h5pool.pool.remote import stamp_of_details

logger = logging.getLogger("h5pool.pool.handle_pool")


class PooledFile:
    """One open file of the pool, with the objects looked up through it.

    A file is open as an ``h5py.File``, as a plain descriptor (``os.open``, all
    that reads through byte maps need, at a fraction of an HDF5 open), or both.

    Looked-up ``h5py.Dataset`` objects are kept because a name lookup costs
    ~35 µs and the first read through a fresh Dataset object far more; they die
    with the handle.  ``memo`` lets higher layers keep their own per-handle
    state (readers, offsets) under the same lifetime.
    """

    __slots__ = (
        "_datasets",
        "_file",
        "_raw_fd",
        "doomed",
        "fd",
        "fileobj",
        "memo",
        "owner",
        "path",
        "pins",
    )

    def __init__(
        self,
        path: str,
        file: h5py.File | None,
        *,
        plain_descriptor: bool = True,
        fileobj: Any = None,
        fd: int | None = None,
    ) -> None:
        self.path = path
        self._file = file
        #: A descriptor of the pool's own (``os.open``), for files read without HDF5.
        self.fd = fd
        #: For remote files, the fsspec file object HDF5 reads through; closed with the handle.
        self.fileobj = fileobj
        self.pins = 0
        self.doomed = False
        #: The pool's table of handles this entry sits in (replaced when a fork resets it).
        self.owner: Any = None
        self.memo: dict[Any, Any] = {}
        self._datasets: dict[str, h5py.Dataset] = {}
        # -1: not looked up yet.  Drivers other than sec2 have no plain descriptor.
        self._raw_fd: int | None = -1 if plain_descriptor else None

    @property
    def file(self) -> h5py.File:
        """The open ``h5py.File`` (acquire without ``raw=True`` to be sure there is one)."""
        if self._file is None:
            raise RuntimeError(f"{self.path} is open as a plain descriptor only")
        return self._file

    @property
    def has_hdf5(self) -> bool:
        return self._file is not None

    @property
    def descriptors(self) -> int:
        return (self._file is not None) + (self.fd is not None)

    def dataset(self, key: str) -> h5py.Dataset:
        try:
            return self._datasets[key]
        except KeyError:
            pass
        try:
            # The low-level open skips ~20 µs of high-level path handling per miss.
            dataset = h5py.Dataset(h5py.h5d.open(self.file.id, key.encode()))
        except (KeyError, ValueError, TypeError):
            try:
                node = self.file[key]
            except KeyError as exc:
                raise self._lookup_error(key, exc) from exc
            if not isinstance(node, h5py.Dataset):
                raise MissingKeyError(
                    f"{self.path}: {key!r} is a {type(node).__name__}, not a dataset",
                    path=self.path,
                ) from None
            dataset = node
        self._check_datatype(key, dataset)
        self._datasets[key] = dataset
        return dataset

    def _check_datatype(self, key: str, dataset: h5py.Dataset) -> None:
        """Refuse a datatype numpy cannot represent, once, when the dataset opens.

        A damaged datatype message (a float's exponent bias changed, say) opens
        fine in HDF5 and fails later, wherever ``dataset.dtype`` is first asked,
        with a ``ValueError`` that names neither file nor key.
        """
        try:
            dataset.dtype  # noqa: B018 -- h5py converts the datatype here
        except (ValueError, TypeError) as exc:
            raise UnreadableFileError(
                f"{self.path}: {key!r} has a datatype numpy cannot represent "
                f"(a damaged datatype message?): {exc}",
                path=self.path,
            ) from exc

    def _some_datasets(self, limit: int = 10) -> str:
        """``datasets: a, b, ...``: up to ``limit`` of the file's datasets, for messages.

        It builds an error message, so it never raises: a damaged file can give
        names as ``bytes``, or fail while it is visited.
        """
        found: list[str] = []

        def visit(name: str | bytes, node: Any) -> bool | None:
            if isinstance(node, h5py.Dataset):
                found.append(name if isinstance(name, str) else repr(name))
            return True if len(found) > limit else None  # a true value stops the visit

        try:
            self.file.visititems(visit)
        except Exception:  # a damaged file: the message goes without the list
            return "its datasets cannot be listed"
        shown = ", ".join(found[:limit]) + (", ..." if len(found) > limit else "")
        return f"datasets: {shown}" if found else "it has no datasets"

    def _lookup_error(self, key: str, exc: KeyError) -> CorpusError:
        """A missing key, or one whose link exists but whose object HDF5 cannot read
        (a checksum or metadata failure of a damaged file): not the same problem."""
        try:
            linked = self.file.get(key, getlink=True) is not None
        except Exception:  # the path to it is damaged too
            linked = True
        if not linked:
            return MissingKeyError(
                f"{self.path}: no dataset {key!r} in the file; {self._some_datasets()}",
                path=self.path,
            )
        damage = (
            "a checksum failed" if "checksum" in str(exc).lower() else "its metadata is damaged"
        )
        return UnreadableFileError(
            f"{self.path}: {key!r} exists but cannot be read ({damage}): {exc}", path=self.path
        )

    def raw_fd(self) -> int | None:
        """The OS descriptor HDF5 reads through, for direct ``pread`` calls.

        Re-using HDF5's own descriptor costs no extra slot against ``max_open``.
        Only the default ``sec2`` driver has one plain descriptor per file.
        """
        if self.fd is not None:
            return self.fd
        if self._raw_fd == -1 and self._file is not None:
            handle = self.file.id.get_vfd_handle()
            self._raw_fd = handle if isinstance(handle, int) and handle >= 0 else None
        return self._raw_fd

    def close(self) -> None:
        self._datasets.clear()
        self.memo.clear()
        self._raw_fd = None
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # closing must never mask the error that led here
                logger.debug("h5pool: error while closing %s", self.path, exc_info=True)
            self._file = None
        if self.fileobj is not None:
            try:
                self.fileobj.close()
            except Exception:
                logger.debug("h5pool: error while closing %s", self.path, exc_info=True)

    def stamp(self) -> tuple[int, int]:
        """(size, mtime in ns) of the file this handle reads, without a new request."""
        if self.fileobj is not None:
            return stamp_of_details(getattr(self.fileobj, "details", {}))
        fd = self.raw_fd()
        info = os.fstat(fd) if fd is not None else os.stat(self.path)
        return info.st_size, info.st_mtime_ns

    def attach_hdf5(self, file: h5py.File) -> None:
        self._file = file


def open_descriptor(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if is_emfile(exc):
            raise
        raise open_error(path, exc) from exc


def open_error(path: str, exc: OSError) -> Exception:
    if exc.errno == errno.ENOENT or not os.path.exists(path):
        return MissingFileError(f"{path}: no such file", path=path)
    if os.path.isdir(path):
        return UnreadableFileError(f"{path}: is a directory, not an HDF5 file", path=path)
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    if size == 0:
        reason = "the file is empty (0 bytes)"
    elif "truncated" in str(exc):
        reason = f"the file is truncated ({size} bytes on disk)"
    elif "signature" in str(exc) or "not an HDF5" in str(exc).lower():
        reason = "not an HDF5 file"
    elif "already open for write" in str(exc):
        reason = (
            "another process has it open for writing; to read it while it is written "
            "under SWMR, pass file_kwargs={'swmr': True}"
        )
    elif _is_locking_failure(exc):
        reason = (
            "HDF5 could not lock it (file systems such as NFS and GPFS often refuse locks); "
            "pass file_kwargs={'locking': False} or set HDF5_USE_FILE_LOCKING=FALSE"
        )
    else:
        reason = "HDF5 could not open it"
    return UnreadableFileError(f"{path}: {reason}: {exc}", path=path)


def _is_locking_failure(exc: OSError) -> bool:
    text = str(exc).lower()
    return exc.errno == errno.ENOLCK or "errno = 37" in text or "unable to lock file" in text

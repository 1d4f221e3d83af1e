"""A remote index in one round: every object's details and first bytes, fetched together.

Why: indexing an object asked for its size (a HEAD), opened it (another HEAD)
and read its metadata (a GET), one object after another: 3 round trips per
object, 6 s for 64 objects at 20 ms.  HDF5 metadata sits mostly at the start
of a file, so the scan first fetches every object's details and its first
``PREFIX_BYTES`` concurrently, then parses each object locally through
:class:`PrefixedFile`, which serves reads from the prefix and sends only
what lies beyond it to the store.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from h5pool.pool.range_requests import RangeRequests

#: Bytes fetched from the start of each object: HDF5's superblock, root group
#: and the metadata of small and medium files.
PREFIX_BYTES = 64 << 10
#: Requests open at once (ramped up as connections open: see
#: :mod:`h5pool.pool.range_requests`).
PREFETCH_IN_FLIGHT = 16


def prefetch(urls: Sequence[str], filesystems: Any) -> None:
    """Fetch every URL's details and prefix together into ``filesystems.prefetched``;
    a failure is kept there too, and raised, naming the URL, when it is used."""
    todo = [url for url in urls if url not in filesystems.prefetched]
    if not todo:
        return
    requests = RangeRequests(filesystems, PREFETCH_IN_FLIGHT)
    try:
        asked = [(url, requests.details(url)) for url in todo]
        prefixes: list[tuple[str, dict[str, Any], Future[bytes] | None]] = []
        for url, details in asked:  # each prefix is sent as soon as its size is known
            try:
                found = dict(details.result())
            except Exception as exc:  # raised by remote_stamp / open_remote, naming the URL
                filesystems.prefetched[url] = exc
                continue
            size = int(found.get("size") or 0)
            prefix = requests.get(url, 0, min(size, PREFIX_BYTES)) if size else None
            prefixes.append((url, found, prefix))
        for url, found, prefix in prefixes:
            try:
                filesystems.prefetched[url] = (found, prefix.result() if prefix else b"")
            except Exception as exc:
                filesystems.prefetched[url] = exc
    finally:
        requests.close()


class PrefixedFile(io.RawIOBase):
    """A read-only file over an object: its first bytes from memory, the rest
    from ``opener()`` (an fsspec file), opened only if a read goes past them."""

    def __init__(self, prefix: bytes, details: dict[str, Any], opener: Any) -> None:
        super().__init__()
        #: The object's details, as an fsspec file keeps them (its stamp).
        self.details = details
        size = int(details.get("size") or 0)
        self._prefix = prefix
        self._size = size
        self._opener = opener
        self._rest: Any = None
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._position
        wanted = min(len(view), max(0, self._size - start))
        if wanted == 0:  # at or past the end: nothing to ask the store for
            return 0
        if start + wanted <= len(self._prefix):
            view[:wanted] = self._prefix[start : start + wanted]
        else:
            if self._rest is None:
                self._rest = self._opener()
            self._rest.seek(start)
            data = self._rest.read(wanted)
            wanted = len(data)
            view[:wanted] = data
        self._position = start + wanted
        return wanted

    def close(self) -> None:
        if self._rest is not None:
            self._rest.close()
            self._rest = None
        super().close()

"""Ranged GETs of one process: many in flight, one limit across threads and batches.

Why not fsspec's ``cat_ranges``: it bounds requests per call, so two reading
threads, or a batch and the next batches' prefetch, would each keep the limit
open at once, and a call returns only when its slowest range has.  Here every
range is a future of its own, sent on the filesystem's event loop behind one
semaphore per process: a reader waits for just the ranges it needs, and the
limit holds for everything in flight.

New connections ramp up, as TCP's slow start does: four requests may start at
once, and each answer lets one more start, up to the limit.  A cold burst of
16 connects overflowed a small server's accept queue (Python's ``http.server``
listens with a backlog of 5); every dropped connect is retried by the kernel
after a second, which cost 1.0 s on the first batch against moto.

Filesystems without an async implementation (local, memory) are read in a
thread pool of the same size.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol


class FilesystemsByURL(Protocol):
    """What :class:`~h5pool.pool.remote.Filesystems` offers: a filesystem per URL."""

    def for_url(self, url: str) -> Any: ...


#: Requests that may start together before any has answered.
FIRST_IN_FLIGHT = 4


class RangeRequests:
    """``get(url, start, end)``: a future of those bytes, and ``details(url)``,
    with at most ``max_in_flight`` requests open through this object.

    Parameters
    ----------
    filesystems
        The process's fsspec filesystems.
    max_in_flight
        Requests open at once, across every caller of this object.
    first_in_flight
        Requests that may start before the first answer (the ramp's start).
    """

    def __init__(
        self,
        filesystems: FilesystemsByURL,
        max_in_flight: int,
        first_in_flight: int = FIRST_IN_FLIGHT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.filesystems = filesystems
        self.max_in_flight = max_in_flight
        self._capacity = max(1, min(first_in_flight, max_in_flight))
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        #: Requests sent, open now, and the most open at once.
        self.requests = self.in_flight = self.peak_in_flight = 0

    def get(self, url: str, start: int, end: int) -> Future[bytes]:
        """Bytes ``[start, end)`` of ``url``, fetched in the background."""
        return self._submit(url, "cat_file", start=start, end=end)

    def details(self, url: str) -> Future[dict[str, Any]]:
        """``url``'s details (fsspec's ``info``: size, ETag, ...), in the background."""
        return self._submit(url, "info")

    def close(self) -> None:
        """Stop the thread pool of synchronous filesystems (async ones need nothing)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _submit(self, url: str, method: str, **kwargs: Any) -> Future[Any]:
        filesystem = self.filesystems.for_url(url)
        is_async = getattr(filesystem, "async_impl", False)
        loop = getattr(filesystem, "loop", None) if is_async else None
        if loop is None:
            call = getattr(filesystem, method)
            return self._thread_pool().submit(self._call_sync, call, url, kwargs)
        coroutine = self._call_async(getattr(filesystem, "_" + method), url, kwargs)
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    async def _call_async(self, call: Any, url: str, kwargs: dict[str, Any]) -> Any:
        slots = self._semaphore()
        await slots.acquire()
        self._opened()
        answered = False
        try:
            answer = await call(url, **kwargs)
            answered = True
            return _plain(answer)
        finally:
            self._closed()
            slots.release()
            if answered and self._capacity < self.max_in_flight:
                self._capacity += 1  # only the loop's thread touches the ramp
                slots.release()

    def _semaphore(self) -> asyncio.Semaphore:
        """The semaphore of the running loop (fsspec runs one per process)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self._capacity), loop
        return self._slots

    def _call_sync(self, call: Any, url: str, kwargs: dict[str, Any]) -> Any:
        self._opened()
        try:
            return _plain(call(url, **kwargs))
        finally:
            self._closed()

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.max_in_flight, thread_name_prefix="h5pool-range"
                )
            return self._executor

    def _opened(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _closed(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _plain(answer: Any) -> Any:
    """Bytes as ``bytes`` (some filesystems answer with bytearrays or views)."""
    if isinstance(answer, (bytearray, memoryview)):
        return bytes(answer)
    return answer

"""Ranged requests through a synchronous fsspec filesystem (memory://): the
thread pool path of :mod:`h5pool.pool.range_requests`.  The async path (s3fs)
is tested over moto in ``test_remote_blocks.py``."""

from __future__ import annotations

import fsspec
import pytest

from h5pool.pool import Filesystems
from h5pool.pool.range_requests import RangeRequests


def test_ranges_and_details_through_a_synchronous_filesystem() -> None:
    memory = fsspec.filesystem("memory")
    payload = bytes(range(256)) * 64
    memory.pipe("/h5pool-ranges/object.bin", payload)
    requests = RangeRequests(Filesystems(None), max_in_flight=3)
    try:
        url = "memory://h5pool-ranges/object.bin"
        futures = [requests.get(url, start, start + 100) for start in range(0, 5000, 250)]
        for start, future in zip(range(0, 5000, 250), futures, strict=True):
            assert future.result(timeout=60) == payload[start : start + 100]
        assert requests.details(url).result(timeout=60)["size"] == len(payload)
        assert requests.requests == len(futures) + 1
        assert 1 <= requests.peak_in_flight <= 3 and requests.in_flight == 0
        with pytest.raises(FileNotFoundError):
            requests.get("memory://h5pool-ranges/missing.bin", 0, 10).result(timeout=60)
    finally:
        requests.close()
        memory.rm("/h5pool-ranges", recursive=True)


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        RangeRequests(Filesystems(None), max_in_flight=0)

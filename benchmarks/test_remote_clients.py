"""Issue 20's choice of client: fsspec (s3fs, async) against obstore (Rust).

    pip install obstore
    pytest benchmarks/test_remote_clients.py --benchmark-only -s

moto and the tests' latency proxy run in a child process, so this process's
CPU time is the client's own.  64 objects of 1 MiB; each client fetches the
same ranges of every object, 16 requests in flight: h5pool's own requests
through fsspec (:class:`h5pool.pool.range_requests.RangeRequests`, what the
block cache uses) and obstore's ``get_range_async`` behind an
``asyncio.Semaphore(16)``.  Reports wall time and client CPU per request, for
ranges of h5pool's 1 MiB blocks and of smaller ones.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from h5pool.pool import Filesystems
from h5pool.pool.range_requests import RangeRequests
from targets import report

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
obstore = pytest.importorskip("obstore", reason="pip install obstore to compare clients")
from obstore.store import S3Store  # noqa: E402

OBJECTS, IN_FLIGHT = 64, 16
LATENCY_MS = os.environ.get("H5POOL_BENCH_LATENCY_MS", "20")
SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from moto.server import ThreadedMotoServer
from helpers.latency_proxy import LatencyProxy
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
proxy = LatencyProxy(f"{{host}}:{{port}}", latency={latency} / 1000)
print(proxy.endpoint, flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    code = SERVER.format(tests=tests, latency=LATENCY_MS)
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        options = options_for(url)
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
        fs.call_s3("create_bucket", Bucket="clients")
        for number in range(OBJECTS):
            fs.pipe(f"clients/object_{number:03d}", os.urandom(1 << 20))
        yield url
    finally:
        child.kill()
        child.wait()


def options_for(url: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"},
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(fetch: Callable[[int], list[Any]], size: int) -> tuple[float, float]:
    """Wall seconds and client CPU ms per request, best of three rounds."""
    best = (float("inf"), float("inf"))
    for _ in range(3):
        wall, cpu = time.perf_counter(), cpu_seconds()
        answers = fetch(size)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        assert [len(a) for a in answers] == [size] * OBJECTS
        best = min(best, (wall, cpu * 1000 / OBJECTS))
    return best


@pytest.mark.parametrize("size", [1 << 20, 64 << 10, 4 << 10], ids=["1MiB", "64KiB", "4KiB"])
def test_fsspec_against_obstore(benchmark: Any, endpoint: str, size: int) -> None:
    urls = [f"s3://clients/object_{number:03d}" for number in range(OBJECTS)]
    requests = RangeRequests(Filesystems(options_for(endpoint)), IN_FLIGHT)
    store = S3Store(
        "clients",
        endpoint=endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        region="us-east-1",
        client_options={"allow_http": True},
    )

    def with_fsspec(size: int) -> list[bytes]:
        futures = [requests.get(url, 0, size) for url in urls]
        return [future.result() for future in futures]

    async def all_with_obstore(size: int) -> list[Any]:
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one(number: int) -> Any:
            async with slots:
                key = f"object_{number:03d}"
                return await obstore.get_range_async(store, key, start=0, end=size)

        return await asyncio.gather(*(one(number) for number in range(OBJECTS)))

    def with_obstore(size: int) -> list[Any]:
        return [memoryview(answer) for answer in asyncio.run(all_with_obstore(size))]

    with_fsspec(size)  # connections open, on both sides
    with_obstore(size)
    fsspec_wall, fsspec_cpu = benchmark.pedantic(measured, args=(with_fsspec, size), rounds=1)
    obstore_wall, obstore_cpu = measured(with_obstore, size)
    requests.close()
    report(
        benchmark,
        f"{OBJECTS} ranges of {size >> 10} KiB, {IN_FLIGHT} in flight, {LATENCY_MS} ms per request",
        {
            "fsspec (s3fs) wall ms": fsspec_wall * 1000,
            "obstore wall ms": obstore_wall * 1000,
            "fsspec client CPU ms per request": fsspec_cpu,
            "obstore client CPU ms per request": obstore_cpu,
            "obstore speed-up in wall time": fsspec_wall / obstore_wall,
        },
    )

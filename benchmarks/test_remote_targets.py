"""Issue 20's targets: object storage behind latency, blocks against today's path.

    pytest benchmarks/test_remote_targets.py --benchmark-only -s

moto on 127.0.0.1 behind the tests' latency proxy (``H5POOL_BENCH_LATENCY_MS``,
20 by default); 64 objects x 256 rows x 4 KiB; batches of 64.  Each case reads
the same batches with ``remote_block_bytes=None`` (HDF5 over an fsspec file
object, one request at a time: the path before issue 20) and with byte maps
read as blocks, and reports samples/s, requests per sample and the peak of
requests in flight that the proxy saw.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from h5pool import Loader, PooledH5Dataset
from h5pool.bench import chunked
from targets import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.latency_proxy import LatencyProxy

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

FILES, ROWS, WIDTH, BATCH = 64, 256, 1024, 64
SAMPLES = int(os.environ.get("H5POOL_BENCH_REMOTE_SAMPLES", "2048"))
LATENCY = float(os.environ.get("H5POOL_BENCH_LATENCY_MS", "20")) / 1000
#: The proxy's accept queue: http.server's default of 5 unless set (see
#: h5pool.pool.range_requests on why a cold burst of connects needs a ramp).
BACKLOG = int(os.environ.get("H5POOL_BENCH_BACKLOG", "5"))
#: The Loader's block cache, in bytes: the default 256 MiB holds this whole
#: corpus after its first pass; a smaller one keeps fetching, as a corpus
#: larger than memory does.
CACHE = int(os.environ.get("H5POOL_BENCH_REMOTE_CACHE_MIB", "256")) << 20
#: A training step per batch in the Loader's loop (sleeping, as a GPU step
#: releases the GIL); 0 measures the loader alone.
STEP = float(os.environ.get("H5POOL_BENCH_STEP_MS", "0")) / 1000
STORAGE = {"contiguous": {}, "gzip": {"chunks": (8, WIDTH), "compression": "gzip", "shuffle": True}}


@pytest.fixture(scope="module")
def storage() -> Iterator[tuple[dict[str, Any], LatencyProxy]]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = LatencyProxy(f"{host}:{port}", latency=LATENCY, backlog=BACKLOG)
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": proxy.endpoint, "region_name": "us-east-1"},
    }
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.call_s3("create_bucket", Bucket="bench")
    rng = np.random.default_rng(0)
    for name, layout in STORAGE.items():
        for number in range(FILES):
            buffer = io.BytesIO()
            values = (rng.integers(0, 100, (ROWS, WIDTH)) + 1000 * number).astype("f4")
            with h5py.File(buffer, "w") as f:
                f.create_dataset("data", data=values, **layout)
            fs.pipe(f"bench/{name}/shard_{number:03d}.h5", buffer.getvalue())
    yield options, proxy
    proxy.stop()
    server.stop()


def rate(
    ds: PooledH5Dataset, batches: list[np.ndarray], proxy: LatencyProxy
) -> tuple[float, int, int]:
    proxy.reset()
    start = time.perf_counter()
    for batch in batches:
        ds.read_batch(batch)
    seconds = time.perf_counter() - start
    return sum(len(b) for b in batches) / seconds, proxy.requests, proxy.peak_in_flight


@pytest.mark.parametrize("order", ["block", "random"])
@pytest.mark.parametrize("kind", list(STORAGE))
def test_blocks_against_todays_path(
    benchmark: Any, storage: tuple[dict[str, Any], LatencyProxy], kind: str, order: str
) -> None:
    options, proxy = storage
    url = f"s3://bench/{kind}/"
    today = PooledH5Dataset(url, "data", storage_options=options, remote_block_bytes=None)
    blocks = PooledH5Dataset(url, "data", storage_options=options)
    if order == "block":
        batches = chunked.block_batches(blocks, BATCH, SAMPLES)
    else:
        picked = np.random.default_rng(1).permutation(len(blocks))[:SAMPLES]
        batches = [picked[i : i + BATCH] for i in range(0, len(picked), BATCH)]
    count = sum(len(b) for b in batches)
    new_rate, new_requests, new_peak = benchmark.pedantic(
        rate, args=(blocks, batches, proxy), rounds=1
    )
    old_rate, old_requests, old_peak = rate(today, batches, proxy)
    for batch in batches[:3]:  # the same values both ways
        assert np.array_equal(today.read_batch(batch)["data"], blocks.read_batch(batch)["data"])
    report(
        benchmark,
        f"{kind}, {order} order, {FILES} objects x {ROWS} rows x 4 KiB, "
        f"{LATENCY * 1000:.0f} ms per request, batches of {BATCH}",
        {
            "today's read_batch (HDF5 over fsspec) samples/s": old_rate,
            "blocks samples/s": new_rate,
            "speed-up (target: block >= 1.8, random >= 2.3)": new_rate / old_rate,
            "requests per sample, today": old_requests / count,
            "requests per sample, blocks": new_requests / count,
            "peak in flight, today": float(old_peak),
            "peak in flight, blocks": float(new_peak),
        },
    )


def loader_rate(loader: Loader, proxy: LatencyProxy) -> tuple[float, int, int]:
    proxy.reset()
    start = time.perf_counter()
    samples = 0
    for batch in loader:
        samples += len(batch["data"])
        if STEP:
            time.sleep(STEP)
    return samples / (time.perf_counter() - start), proxy.requests, proxy.peak_in_flight


@pytest.mark.parametrize("kind", list(STORAGE))
def test_loader_fetching_ahead_against_todays_loader(
    benchmark: Any, storage: tuple[dict[str, Any], LatencyProxy], kind: str
) -> None:
    """A shuffled epoch through ``Loader(num_threads=2)``: today's (HDF5 over
    fsspec), blocks without fetching ahead, and blocks fetching 4 batches ahead."""
    options, proxy = storage
    url = f"s3://bench/{kind}/"

    def loader(fetch_ahead: int, **reads: Any) -> Loader:
        ds = PooledH5Dataset(url, "data", storage_options=options, **reads)
        return Loader(ds, BATCH, num_threads=2, fetch_ahead=fetch_ahead, seed=3)

    today = loader(0, remote_block_bytes=None)
    ahead = loader(4, remote_cache_bytes=CACHE)
    new_rate, new_requests, new_peak = benchmark.pedantic(
        loader_rate, args=(ahead, proxy), rounds=1
    )
    plain_rate, _, plain_peak = loader_rate(loader(0, remote_cache_bytes=CACHE), proxy)
    old_rate, old_requests, _ = loader_rate(today, proxy)
    samples = len(ahead.dataset)
    report(
        benchmark,
        f"Loader(num_threads=2), {kind}, a shuffled epoch of {samples} samples, "
        f"{LATENCY * 1000:.0f} ms per request, a block cache of {CACHE >> 20} MiB, "
        f"a step of {STEP * 1000:.0f} ms per batch",
        {
            "today's Loader (HDF5 over fsspec) samples/s": old_rate,
            "blocks, no fetching ahead, samples/s": plain_rate,
            "blocks, fetch_ahead=4, samples/s": new_rate,
            "speed-up fetching ahead (target >= 2.5)": new_rate / old_rate,
            "requests per sample, today": old_requests / samples,
            "requests per sample, fetching ahead": new_requests / samples,
            "peak in flight, no fetching ahead": float(plain_peak),
            "peak in flight, fetching ahead": float(new_peak),
        },
    )


def test_the_remote_index_against_a_sequential_scan(
    benchmark: Any, storage: tuple[dict[str, Any], LatencyProxy]
) -> None:
    """Building the index of 64 objects: h5pool's concurrent round, against the
    sequential recipe (each object's details, then HDF5 opening it and reading
    its dataset's metadata through fsspec)."""
    options, proxy = storage
    url = "s3://bench/gzip/"

    def build() -> tuple[float, int, int]:
        proxy.reset()
        start = time.perf_counter()
        ds = PooledH5Dataset(url, "data", storage_options=options, scan_processes=1)
        assert len(ds) == FILES * ROWS
        return time.perf_counter() - start, proxy.requests, proxy.peak_in_flight

    def sequential() -> tuple[float, int]:
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
        objects = sorted(fs.ls(url))
        proxy.reset()
        start = time.perf_counter()
        for name in objects:
            fs.info(name)
            with fs.open(name, block_size=1 << 20) as raw, h5py.File(raw, "r") as f:
                data = f["data"]
                _ = data.shape, data.dtype, data.chunks, data.id.get_num_chunks()
        return time.perf_counter() - start, proxy.requests

    seconds, requests, peak = benchmark.pedantic(build, rounds=1)
    old_seconds, old_requests = sequential()
    report(
        benchmark,
        f"the index of {FILES} objects, {LATENCY * 1000:.0f} ms per request",
        {
            "sequential scan seconds": old_seconds,
            "h5pool's concurrent index seconds": seconds,
            "speed-up (target >= 5)": old_seconds / seconds,
            "requests, sequential": float(old_requests),
            "requests, h5pool": float(requests),
            "peak in flight, h5pool": float(peak),
        },
    )

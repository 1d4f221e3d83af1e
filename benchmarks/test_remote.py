"""Remote (S3 on a local moto server) against local reads, by fsspec cache settings.

Reports requests per sample (counted at the botocore client) and samples/s for
h5pool's default open options and for a few alternatives, on the same corpus
and the same block order.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import pytest

from h5pool import BlockShuffleSampler, PooledH5Dataset

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

FILES, ROWS, WIDTH = 40, 64, 1024
SETTINGS: dict[str, dict[str, Any]] = {
    "default (blockcache 1 MiB)": {},
    "readahead 64 KiB": {"cache_type": "readahead", "block_size": 1 << 16},
    "readahead 5 MiB (fsspec default)": {"cache_type": "readahead", "block_size": 5 << 20},
    "no cache": {"cache_type": "none"},
}


@pytest.fixture(scope="module")
def remote_corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], str]]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
    }
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.call_s3("create_bucket", Bucket="bench")
    local = tmp_path_factory.mktemp("remote-local")
    for number in range(FILES):
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as f:
            f["data"] = np.full((ROWS, WIDTH), number, dtype="float32")
        fs.pipe(f"bench/shards/shard_{number:03d}.h5", buffer.getvalue())
        (local / f"shard_{number:03d}.h5").write_bytes(buffer.getvalue())
    yield options, str(local)
    server.stop()


def epoch(ds: PooledH5Dataset) -> float:
    order = BlockShuffleSampler(ds, seed=0).rank_indices()
    start = time.perf_counter()
    for first in range(0, len(order), 64):
        ds.__getitems__(order[first : first + 64])
    return len(order) / (time.perf_counter() - start)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_remote_reads(
    benchmark: Any, remote_corpus: tuple[dict[str, Any], str], setting: str
) -> None:
    options, _ = remote_corpus
    ds = PooledH5Dataset("s3://bench/shards/", "data", storage_options=options, max_open=16)
    ds.pool.open_options = SETTINGS[setting]
    filesystem = ds.pool.filesystems.for_url("s3://bench/")
    filesystem.connect()
    requests = [0]
    filesystem.s3.meta.events.register(
        "before-send", lambda **_: requests.__setitem__(0, requests[0] + 1)
    )
    rate = benchmark.pedantic(epoch, args=(ds,), rounds=1, iterations=1)
    per_sample = requests[0] / len(ds)
    benchmark.extra_info.update(samples_per_s=rate, requests_per_sample=per_sample)
    print(f"\n{setting:34s} {rate:9,.0f} samples/s  {per_sample:.4f} requests/sample")
    assert requests[0] > 0


def test_local_reads(benchmark: Any, remote_corpus: tuple[dict[str, Any], str]) -> None:
    _, local = remote_corpus
    ds = PooledH5Dataset(local, "data", max_open=16)
    rate = benchmark.pedantic(epoch, args=(ds,), rounds=1, iterations=1)
    benchmark.extra_info.update(samples_per_s=rate)
    print(f"\n{'local files':34s} {rate:9,.0f} samples/s")

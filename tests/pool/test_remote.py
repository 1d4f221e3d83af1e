"""Corpora on S3, tested against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import gc
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import pytest

from h5pool import (
    AccessDeniedError,
    CorpusError,
    HandlePool,
    MissingFileError,
    NoFilesFoundError,
    PooledH5Dataset,
    ReadError,
    SourceUnavailableError,
    UnreadableFileError,
)
from helpers.corpus import encoded
from helpers.paths import SRC_DIR, TESTS_DIR

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'h5pool[s3]')")

pytestmark = pytest.mark.slow  # real servers and processes: deselect with -m 'not slow'

FILES, ROWS = 80, 6  # enough files for pools of 5 and 8 to evict; kept small for CI time


def file_bytes(number: int, rows: int = ROWS) -> bytes:
    buffer = io.BytesIO()
    values = np.array([encoded(number, r) for r in range(rows)], dtype=np.int64)
    with h5py.File(buffer, "w") as f:
        f["data"] = np.repeat(values[:, None], 4, axis=1).astype("float32")
        f["label"] = values
    return buffer.getvalue()


class S3Server:
    """A moto S3 server on a free port of 127.0.0.1, with its client options."""

    def __init__(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.options: dict[str, Any] = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options)

    def bucket(self, name: str) -> None:
        self.fs.call_s3("create_bucket", Bucket=name)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.bucket("corpus")
    for number in range(FILES):
        server.fs.pipe(f"corpus/shards/shard_{number:04d}.h5", file_bytes(number))
    yield server
    server.stop()
    # botocore's service models, loaded by the first client, are objects that
    # every later DataLoader worker's garbage collection would walk (copying
    # each page of the forked child): put them out of its sight.
    s3fs.S3FileSystem.clear_instance_cache()
    gc.collect()
    gc.freeze()


def test_prefix_glob_and_single_object(s3: S3Server) -> None:
    ds = PooledH5Dataset("s3://corpus/shards/", ["data", "label"], storage_options=s3.options)
    assert len(ds.files) == FILES and len(ds) == FILES * ROWS
    assert ds.files[0] == "s3://corpus/shards/shard_0000.h5"
    globbed = PooledH5Dataset(
        "s3://corpus/shards/shard_001*.h5", "label", storage_options=s3.options
    )
    assert len(globbed.files) == 10
    single = PooledH5Dataset(
        "s3://corpus/shards/shard_0042.h5", "label", storage_options=s3.options
    )
    assert [int(single[r]["label"]) for r in range(ROWS)] == [encoded(42, r) for r in range(ROWS)]


def test_small_pool_over_remote_files(s3: S3Server) -> None:
    ds = PooledH5Dataset(
        "s3://corpus/shards/", ["data", "label"], storage_options=s3.options, max_open=5
    )
    order = np.random.default_rng(0).permutation(len(ds))[:300]
    for index in order.tolist():
        sample = ds[index]
        file_number, row = divmod(index, ROWS)
        assert int(sample["label"]) == encoded(file_number, row)
        assert bool((sample["data"] == float(encoded(file_number, row))).all())
    last = FILES * ROWS - 1
    batch = ds.__getitems__([5, last, 5, FILES // 2 * ROWS])
    assert [int(s["label"]) for s in batch] == [
        encoded(0, 5),
        encoded(FILES - 1, ROWS - 1),
        encoded(0, 5),
        encoded(FILES // 2, 0),
    ]
    stats = ds.pool.stats()
    assert stats.peak_open_files <= 5 and stats.open_files <= 5
    for entry in list(ds.pool._handles.values()):
        assert entry.fileobj is not None and not entry.fileobj.closed
    fileobjs = [entry.fileobj for entry in ds.pool._handles.values()]
    ds.pool.close()
    assert all(fileobj.closed for fileobj in fileobjs)  # eviction closes both objects


def test_pool_pickles_only_the_recipe(s3: S3Server) -> None:
    import pickle

    pool = HandlePool(max_open=2, storage_options=s3.options)
    with pool.open("s3://corpus/shards/shard_0001.h5") as f:
        assert int(f["label"][0]) == encoded(1, 0)
        payload = pickle.dumps(pool)
    clone = pickle.loads(payload)
    assert len(clone) == 0 and clone.storage_options == s3.options
    with clone.open("s3://corpus/shards/shard_0002.h5") as f:
        assert int(f["label"][1]) == encoded(2, 1)


# fork (fsspec instances must not cross it), spawn and forkserver (pickling, exit).
@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_read_every_sample_once(s3: S3Server, context: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, SRC_DIR]))
    script = f"""
import json
from collections import Counter
from torch.utils.data import DataLoader
from helpers.corpus import collate_with_worker_stats
from h5pool import PooledH5Dataset

if __name__ == "__main__":
    options = json.loads({json.dumps(json.dumps(s3.options))})
    # 40 of the 80 files: still 5 times the pool, at half the requests to moto.
    ds = PooledH5Dataset("s3://corpus/shards/shard_00[0-3]*.h5", ["data", "label"],
                         storage_options=options, max_open=8)
    ds[0]  # the parent holds a remote handle (and an s3fs instance) when it forks
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=2,
                        multiprocessing_context={context!r}, collate_fn=collate_with_worker_stats)
    seen, ok, peak = Counter(), True, 0
    for batch in loader:  # the workers exit at the end: no crash while closing S3 files
        seen.update(batch["labels"])
        ok &= batch["data_ok"]
        peak = max(peak, batch["peak_open"])
    print(json.dumps({{"distinct": len(seen), "max_count": max(seen.values()),
                      "ok": ok, "peak": peak}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "distinct": 40 * ROWS,
        "max_count": 1,
        "ok": True,
        "peak": report["peak"],
    }
    assert "Segmentation fault" not in result.stderr and "killed by signal" not in result.stderr
    assert report["peak"] <= 8  # 0: byte-map reads of objects hold no file handle


def test_missing_bucket_object_and_prefix(s3: S3Server) -> None:
    with pytest.raises(MissingFileError, match="s3://no-such-bucket/x/"):
        PooledH5Dataset("s3://no-such-bucket/x/", storage_options=s3.options)
    with pytest.raises(MissingFileError, match=re.escape("s3://corpus/shards/absent.h5")):
        PooledH5Dataset("s3://corpus/shards/absent.h5", storage_options=s3.options)
    with pytest.raises(NoFilesFoundError, match="s3://corpus/empty/"):
        PooledH5Dataset("s3://corpus/empty/", storage_options=s3.options)


def test_truncated_and_non_hdf5_objects(s3: S3Server) -> None:
    s3.fs.pipe("corpus/bad/truncated.h5", file_bytes(7, rows=500)[:3000])
    s3.fs.pipe("corpus/bad/text.h5", b"plain text, not HDF5\n" * 50)
    s3.fs.pipe("corpus/bad/good.h5", file_bytes(3))
    for name in ("truncated", "text"):
        url = f"s3://corpus/bad/{name}.h5"
        with pytest.raises(UnreadableFileError, match=url) as info:
            PooledH5Dataset(url, storage_options=s3.options)
        assert info.value.__cause__ is not None
    kept = PooledH5Dataset("s3://corpus/bad/", "label", storage_options=s3.options, on_error="skip")
    assert kept.files == ["s3://corpus/bad/good.h5"]
    assert sorted(url for url, _ in kept.skipped) == [
        "s3://corpus/bad/text.h5",
        "s3://corpus/bad/truncated.h5",
    ]
    assert int(kept[2]["label"]) == encoded(3, 2)


def test_unreachable_server_fails_fast_with_the_url() -> None:
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
    }
    start = time.monotonic()
    with pytest.raises(SourceUnavailableError, match="s3://corpus/shards/") as info:
        PooledH5Dataset("s3://corpus/shards/", storage_options=options)
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - start < 60  # bounded retries, no hang


def test_server_stopped_mid_epoch() -> None:
    server = S3Server()
    server.bucket("brief")
    for number in range(12):
        server.fs.pipe(f"brief/s_{number:02d}.h5", file_bytes(number))
    ds = PooledH5Dataset("s3://brief/", "label", storage_options=server.options, max_open=2)
    assert int(ds[0]["label"]) == encoded(0, 0)
    server.stop()
    start = time.monotonic()
    with pytest.raises(CorpusError) as info:
        for index in range(ROWS, len(ds)):  # every other file needs a new request
            ds[index]
    assert time.monotonic() - start < 90
    assert "s3://brief/s_" in str(info.value)
    assert isinstance(info.value, (SourceUnavailableError, ReadError, MissingFileError))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC_DIR)
    return subprocess.run(
        [sys.executable, "-m", "h5pool", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def test_cli_info_and_bench_accept_urls(s3: S3Server) -> None:
    options = json.dumps(s3.options)
    info = run_cli("info", "s3://corpus/shards/", "--key", "label", "--storage-options", options)
    assert info.returncode == 0, info.stderr
    assert f"files: {FILES:,} ({FILES:,} readable)" in info.stdout
    assert f"samples along axis 0 of 'label': {FILES * ROWS:,}" in info.stdout
    assert "read by byte map (contiguous, ranged reads of blocks)" in info.stdout
    bench = run_cli(
        "bench",
        "s3://corpus/shards/shard_00[0-3]*.h5",
        "--storage-options",
        options,
        "--samples",
        "40",
        "--fast-samples",
        "120",
        "--pool",
        "8",
        "--strategies",
        "open-per-sample",
        "open-all",
        "pooled-block",
        "pooled-read-batch",
        "raw-pread",
    )
    assert bench.returncode == 0, bench.stderr
    assert "40 files given" in bench.stdout
    assert "n/a: remote files have no descriptor" in bench.stdout
    assert re.search(r"[0-9.]+ requests/sample, peak \d+ in flight", bench.stdout)
    missing = run_cli("info", "s3://corpus/nothing-here.h5", "--storage-options", options)
    assert missing.returncode == 3 and "s3://corpus/nothing-here.h5" in missing.stderr


def test_access_denied_names_the_url() -> None:
    """A moto server that enforces authentication from the first request refuses us."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        options = {
            "key": "unknown",
            "secret": "unknown",
            "client_kwargs": {
                "endpoint_url": f"http://127.0.0.1:{port}",
                "region_name": "us-east-1",
            },
        }
        with pytest.raises(AccessDeniedError, match=re.escape("s3://corpus/x.h5")) as info:
            PooledH5Dataset("s3://corpus/x.h5", storage_options=options)
        assert isinstance(info.value, PermissionError)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_users_botocore_settings_merge_with_h5pools() -> None:
    """A user's ``config_kwargs`` override h5pool's S3 defaults key by key: the
    bounded timeouts and the connection pool for blocks in flight stay."""
    from h5pool.pool.remote import Filesystems

    options = {"config_kwargs": {"read_timeout": 7}, "anon": True}
    filesystem = Filesystems(options).for_url("s3://bucket/key.h5")
    assert filesystem.config_kwargs["read_timeout"] == 7
    assert filesystem.config_kwargs["connect_timeout"] == 5
    assert filesystem.config_kwargs["max_pool_connections"] == 32

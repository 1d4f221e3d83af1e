"""Remote files read through their byte maps, as blocks with many requests in flight.

moto on 127.0.0.1 behind a latency proxy of the tests' own
(:mod:`helpers.latency_proxy`), which counts requests and the peak in flight.
Every value is checked against h5py reading the same bytes locally.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from h5pool import CorpusError, FileChangedError, Loader, PooledH5Dataset
from helpers.filter_masks import write_with_filter_masks
from helpers.latency_proxy import LatencyProxy
from helpers.robomimic import write_robomimic_file

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'h5pool[s3]')")

pytestmark = pytest.mark.slow  # real servers: deselect with -m 'not slow'

FILES, ROWS = 12, 40
STORAGE: dict[str, dict[str, Any]] = {
    "contiguous": {},
    "gzip-shuffle": {"chunks": (6, 16), "compression": "gzip", "shuffle": True},
    "edges-unwritten": {"chunks": (7, 16), "fillvalue": -5.0},
    "filter-masks": {},  # written chunk by chunk, every mask of shuffle + deflate
}


def file_bytes(number: int, storage: str) -> bytes:
    """Rows that name their file and row; some chunks never written (fill value)."""
    buffer = io.BytesIO()
    values = np.arange(ROWS * 16, dtype="f4").reshape(ROWS, 16) + 1000 * number
    with h5py.File(buffer, "w") as f:
        if storage == "filter-masks":
            write_with_filter_masks(f, "data", values)
        else:
            data = f.create_dataset("data", shape=values.shape, dtype="f4", **STORAGE[storage])
            if storage == "edges-unwritten":
                data[: ROWS // 2] = values[: ROWS // 2]  # the chunks past half: never written
            else:
                data[...] = values
        f["label"] = np.arange(ROWS) + 1000 * number
    return buffer.getvalue()


class Storage:
    def __init__(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.proxy = LatencyProxy(f"{host}:{port}", latency=0.02)
        self.options: dict[str, Any] = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.proxy.endpoint, "region_name": "us-east-1"},
        }
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options)
        self.fs.call_s3("create_bucket", Bucket="corpus")
        self.local: dict[str, bytes] = {}
        self.folder = tempfile.TemporaryDirectory()
        for storage in STORAGE:
            for number in range(FILES):
                data = file_bytes(number, storage)
                self.fs.pipe(f"corpus/{storage}/shard_{number:03d}.h5", data)
                self.local[f"s3://corpus/{storage}/shard_{number:03d}.h5"] = data

    def expected(self, storage: str) -> dict[str, np.ndarray]:
        rows: dict[str, list[np.ndarray]] = {"data": [], "label": []}
        for number in range(FILES):
            data = self.local[f"s3://corpus/{storage}/shard_{number:03d}.h5"]
            with h5py.File(io.BytesIO(data), "r") as f:
                rows["data"].append(f["data"][()])
                rows["label"].append(f["label"][()])
        return {key: np.concatenate(parts) for key, parts in rows.items()}

    def local_copies(self, storage: str) -> list[Path]:
        """The objects of ``storage`` written to local files."""
        folder = Path(self.folder.name) / storage
        folder.mkdir(exist_ok=True)
        paths = []
        for url, data in self.local.items():
            if url.startswith(f"s3://corpus/{storage}/"):
                path = folder / url.rsplit("/", 1)[1]
                path.write_bytes(data)
                paths.append(path)
        return sorted(paths)

    def stop(self) -> None:
        self.folder.cleanup()
        self.proxy.stop()
        self.server.stop()


@pytest.fixture(scope="module")
def storage() -> Iterator[Storage]:
    made = Storage()
    yield made
    made.stop()


@pytest.mark.parametrize("kind", list(STORAGE))
def test_remote_byte_maps_equal_h5py_with_requests_in_flight(storage: Storage, kind: str) -> None:
    ds = PooledH5Dataset(f"s3://corpus/{kind}/", ["data", "label"], storage_options=storage.options)
    expected = storage.expected(kind)
    assert {ds.engine.kind("data", n) for n in range(FILES)} == {
        "contiguous" if kind == "contiguous" else "chunked"
    }
    order = np.random.default_rng(1).permutation(len(ds))
    storage.proxy.reset()
    for start in range(0, len(order), 64):
        chosen = order[start : start + 64]
        batch = ds.read_batch(np.concatenate([chosen, chosen[:3]]))  # duplicates too
        for key in ("data", "label"):
            got = batch[key].numpy()
            want = expected[key][np.concatenate([chosen, chosen[:3]])]
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), key
    assert storage.proxy.peak_in_flight > 1  # blocks of many files fetched together
    blocks = ds.engine.remote_blocks
    assert blocks is not None and 1 < blocks.peak_in_flight <= 16
    assert blocks.requests <= storage.proxy.requests
    assert storage.proxy.requests < len(order) // 4  # blocks, not a request per row
    for index in (0, 5, len(ds) - 1):
        sample = ds[index]
        assert sample["data"].numpy().tobytes() == expected["data"][index].tobytes()
    rows = [
        v for batch in Loader(ds, 32, shuffle=False, num_threads=2) for v in batch["label"].tolist()
    ]
    assert rows == expected["label"].tolist()


def test_a_changed_object_is_refused(storage: Storage) -> None:
    ds = PooledH5Dataset(
        "s3://corpus/contiguous/", ["data", "label"], storage_options=storage.options
    )
    ds.read_batch([0, ROWS])
    storage.fs.pipe("corpus/contiguous/shard_001.h5", file_bytes(1, "contiguous") + b"\0" * 64)
    try:
        fresh = PooledH5Dataset(
            "s3://corpus/contiguous/", ["data", "label"], storage_options=storage.options,
            stale_after=0,
        )  # fmt: skip
        fresh.index.sizes[1] -= 64  # as indexed before the object grew
        with pytest.raises(FileChangedError, match=r"shard_001\.h5"):
            fresh.read_batch([ROWS + 1])
    finally:
        storage.fs.pipe("corpus/contiguous/shard_001.h5", file_bytes(1, "contiguous"))


def test_remote_block_bytes_none_keeps_the_hdf5_path(storage: Storage) -> None:
    """``remote_block_bytes=None``: objects through HDF5 over fsspec, as before."""
    expected = storage.expected("gzip-shuffle")
    ds = PooledH5Dataset(
        "s3://corpus/gzip-shuffle/",
        ["data", "label"],
        storage_options=storage.options,
        remote_block_bytes=None,
    )
    chosen = np.random.default_rng(2).permutation(len(ds))[:50]
    storage.proxy.reset()
    batch = ds.read_batch(chosen)
    assert batch["data"].numpy().tobytes() == expected["data"][chosen].tobytes()
    assert ds.engine.remote_blocks is None and storage.proxy.peak_in_flight == 1
    with pytest.raises(ValueError, match="remote_block_bytes"):
        PooledH5Dataset("s3://corpus/gzip-shuffle/", "data", storage_options=storage.options,
                        remote_block_bytes=0)  # fmt: skip


def test_the_remote_index_is_built_in_one_concurrent_round(storage: Storage) -> None:
    """Details and first bytes of every object asked for together, then parsed
    locally: two requests an object, many in flight, the same index as before."""
    storage.proxy.reset()
    ds = PooledH5Dataset(
        "s3://corpus/gzip-shuffle/", ["data", "label"], storage_options=storage.options,
        scan_processes=1,
    )  # fmt: skip
    assert len(ds) == FILES * ROWS
    assert storage.proxy.peak_in_flight > 1
    assert storage.proxy.requests <= 1 + 2 * FILES  # the listing, then a HEAD and a GET each
    expected = storage.expected("gzip-shuffle")
    assert ds.read_batch([0, len(ds) - 1])["data"].numpy().tobytes() == (
        expected["data"][[0, -1]].tobytes()
    )


def test_prefetched_blocks_are_read_without_requests_of_their_own(storage: Storage) -> None:
    expected = storage.expected("gzip-shuffle")
    ds = PooledH5Dataset(
        "s3://corpus/gzip-shuffle/", ["data", "label"], storage_options=storage.options,
        remote_block_bytes=4096, stale_after=3600,
    )  # fmt: skip
    assert ds.fetches_ahead
    chosen = np.random.default_rng(3).permutation(len(ds))[:40]
    storage.proxy.reset()
    asked = ds.prefetch(chosen)
    assert asked > 1
    assert ds.prefetch(chosen) == 0  # kept or in flight already: nothing sent twice
    batch = ds.read_batch(chosen)  # waits for the prefetch's requests
    assert batch["data"].numpy().tobytes() == expected["data"][chosen].tobytes()
    blocks = ds.engine.remote_blocks
    assert blocks is not None
    # Blocks are kept by a callback that may still run just after the read has
    # its bytes: wait for it (generously, for a loaded machine).
    deadline = time.monotonic() + 60
    while blocks.blocks_fetched < asked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert blocks.blocks_fetched == asked
    assert storage.proxy.requests == blocks.requests  # the read sent none of its own
    local = PooledH5Dataset(
        [str(p) for p in storage.local_copies("gzip-shuffle")], ["data", "label"]
    )
    assert not local.fetches_ahead and local.prefetch(chosen) == 0


def test_one_limit_holds_across_threads_and_prefetch(storage: Storage) -> None:
    """Two threads reading and a prefetch share ``max_requests_in_flight``."""
    expected = storage.expected("contiguous")
    ds = PooledH5Dataset(
        "s3://corpus/contiguous/", ["data", "label"], storage_options=storage.options,
        remote_block_bytes=1024, max_requests_in_flight=3, stale_after=3600,
    )  # fmt: skip
    order = np.random.default_rng(4).permutation(len(ds))
    halves = [order[:150], order[150:300]]
    storage.proxy.reset()
    ds.prefetch(order[300:])
    with ThreadPoolExecutor(2) as executor:
        batches = list(executor.map(ds.read_batch, halves))
    for chosen, batch in zip(halves, batches, strict=True):
        assert batch["data"].numpy().tobytes() == expected["data"][chosen].tobytes()
    blocks = ds.engine.remote_blocks
    assert blocks is not None and blocks.peak_in_flight == 3
    assert storage.proxy.peak_in_flight <= 3


def test_new_connections_ramp_up(storage: Storage) -> None:
    """A cold process opens four requests, then one more per answer, never a
    burst of the whole limit (a small accept queue drops such bursts)."""
    ds = PooledH5Dataset(
        "s3://corpus/contiguous/", "data", storage_options=storage.options,
        remote_block_bytes=64, max_requests_in_flight=16, stale_after=3600,
    )  # fmt: skip
    storage.proxy.reset()
    ds.read_batch(np.arange(0, len(ds), 3))  # rows of 64 bytes: 160 runs of blocks apart
    blocks = ds.engine.remote_blocks
    assert blocks is not None and blocks.requests > 100
    # Four at first; the proxy counts an answer a moment after the client has it,
    # so a request or two sent on it may arrive first.  A burst would show 16.
    assert storage.proxy.peak_unanswered_burst <= 6
    assert blocks.peak_in_flight > 4  # it did ramp up


@pytest.mark.parametrize("fetch_ahead", [0, 4])
def test_the_loader_fetching_ahead_delivers_every_sample_once(
    storage: Storage, fetch_ahead: int
) -> None:
    expected = storage.expected("edges-unwritten")
    ds = PooledH5Dataset(
        "s3://corpus/edges-unwritten/", ["data", "label"], storage_options=storage.options,
        remote_block_bytes=4096,
    )  # fmt: skip
    loader = Loader(ds, 24, num_threads=2, fetch_ahead=fetch_ahead, seed=5)
    labels, rows = [], []
    for batch in loader:
        labels.extend(batch["label"].tolist())
        rows.append(batch["data"].numpy())
    assert sorted(labels) == expected["label"].tolist()
    order = [labels.index(label) for label in expected["label"].tolist()]
    assert np.concatenate(rows)[order].tobytes() == expected["data"].tobytes()


def test_a_failed_prefetch_is_raised_by_the_read_naming_the_object(storage: Storage) -> None:
    ds = PooledH5Dataset(
        "s3://corpus/contiguous/", ["data", "label"], storage_options=storage.options,
        stale_after=3600,
    )  # fmt: skip
    storage.fs.rm("corpus/contiguous/shard_002.h5")
    try:
        assert ds.prefetch([2 * ROWS + 1]) == 1  # sent; its failure is kept for the read
        with pytest.raises(CorpusError, match=r"shard_002\.h5") as raised:
            ds.read_batch([2 * ROWS + 1])
        assert raised.value.__cause__ is not None
        assert ds.read_batch([0])["label"].tolist() == [0]  # others still read
        # A prefetch that fails while the object is away does not fail a read made
        # after it is back: the read asks again for what the prefetch lost.
        ds.prefetch([2 * ROWS + 2])
        storage.fs.pipe("corpus/contiguous/shard_002.h5", file_bytes(2, "contiguous"))
        assert ds.read_batch([2 * ROWS + 2])["label"].tolist() == [2000 + 2]
    finally:
        storage.fs.pipe("corpus/contiguous/shard_002.h5", file_bytes(2, "contiguous"))


def members_file(number: int) -> bytes:
    """Samples as datasets of a group: ``runs/m_k``, (k + 1, 3) values naming file
    and member; one stored gzip + shuffle."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        runs = f.create_group("runs")
        for member in range(4):
            values = np.full((member + 1, 3), 100 * number + member, dtype="i4")
            gzip = {"chunks": True, "compression": "gzip", "shuffle": True}
            options = gzip if member == 2 else {}
            runs.create_dataset(f"m_{member}", data=values, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def layouts(storage: Storage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Members and robomimic-style groups, as objects and as local copies."""
    folder = tmp_path_factory.mktemp("layouts")
    for number in range(3):
        (folder / f"members_{number}.h5").write_bytes(members_file(number))
        write_robomimic_file(folder / f"robot_{number}.hdf5", number)
    for path in folder.iterdir():
        kind = "members" if path.name.startswith("members") else "groups"
        storage.fs.pipe(f"corpus/layouts-{kind}/{path.name}", path.read_bytes())
    return folder


def test_the_members_layout_over_objects_equals_h5py(storage: Storage, layouts: Path) -> None:
    ds = PooledH5Dataset(
        "s3://corpus/layouts-members/", layout="members", group="runs",
        storage_options=storage.options,
    )  # fmt: skip
    assert len(ds) == 12
    for index in range(len(ds)):
        url, member = ds.locate(index)
        with h5py.File(layouts / url.rsplit("/", 1)[1], "r") as f:
            want = f["runs"][f"m_{member}"][()]
        got = ds[index]["data"].numpy()
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), index
    assert [s["data"].shape[0] for s in ds.__getitems__([3, 0, 3])] == [4, 1, 4]


@pytest.mark.parametrize("window", [0, 4])  # whole demonstrations, and windows
def test_the_groups_layout_over_objects_equals_h5py(
    storage: Storage, layouts: Path, window: int
) -> None:
    keys = ["actions", "obs/agentview_image"]
    ds = PooledH5Dataset(
        "s3://corpus/layouts-groups/", keys, layout="groups", group="data",
        window=window, stride=3, storage_options=storage.options,
    )  # fmt: skip
    local = PooledH5Dataset(
        sorted(str(p) for p in layouts.glob("robot_*.hdf5")), keys, layout="groups",
        group="data", window=window, stride=3,
    )  # fmt: skip
    assert len(ds) == len(local) > 0
    for index in range(len(ds)):
        url, _ = ds.locate(index)
        path, _ = local.locate(index)
        assert url.rsplit("/", 1)[1] == Path(path).name
        remote, here = ds[index], local[index]
        for key in keys:
            assert remote[key].numpy().tobytes() == here[key].numpy().tobytes(), (index, key)
    with h5py.File(layouts / "robot_1.hdf5", "r") as f:  # and h5py itself, for one file
        first = next(i for i in range(len(ds)) if ds.locate(i)[0].endswith("robot_1.hdf5"))
        demo = ds.locate(first)[1]
        name = sorted(f["data"])[demo] if not window else None
        if name is not None:
            want = f["data"][name]["actions"][()]
            assert ds[first]["actions"].numpy().tobytes() == want.tobytes()
    if window:
        batch = ds.read_batch(list(range(len(ds))))
        assert batch["actions"].shape == (len(ds), window, 7)

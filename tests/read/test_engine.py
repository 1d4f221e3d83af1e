"""The read engine beyond values: HDF5 opens, descriptors, threads, fork, errors."""

from __future__ import annotations

import multiprocessing
import os
import threading
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h5pool import LayoutError, PooledH5Dataset, ReadError
from h5pool.hdf5.decode import inflate, unshuffle
from helpers.corpus import decode_sample, encoded, make_corpus


def test_cached_start_and_fast_epoch_open_no_hdf5_file(tmp_path: Path) -> None:
    files = make_corpus(
        tmp_path / "c", files=6, rows=10, width=4, chunks=(3, 4), compression="gzip"
    )
    cache = tmp_path / "index.npz"
    PooledH5Dataset(files, ["data", "label"], index_cache=cache)
    ds = PooledH5Dataset(files, ["data", "label"], index_cache=cache, max_open=2)
    assert ds.pool.stats().hdf5_opens == 0
    order = np.random.default_rng(0).permutation(len(ds))
    for begin in range(0, len(ds), 7):
        batch = ds.read_batch(order[begin : begin + 7])
        labels = batch["label"].tolist()
        assert labels == [encoded(*divmod(int(i), 10)) for i in order[begin : begin + 7]]
    assert decode_sample(ds[17]) == (1, 7)
    stats = ds.pool.stats()
    assert stats.hdf5_opens == 0 and stats.raw_opens > 0
    assert stats.peak_open_files <= 2


def test_a_key_without_a_map_opens_hdf5_and_counts_two_descriptors(tmp_path: Path) -> None:
    paths = []
    for number in range(4):
        path = tmp_path / f"f{number}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = np.full((5, 2), number, "f4")
            f["name"] = np.array([f"{number}-{r}".encode() for r in range(5)])
        paths.append(str(path))
    ds = PooledH5Dataset(paths, ["data", "name"], max_open=3)
    batch = ds.__getitems__([19, 0, 7])
    assert [s["name"] for s in batch] == ["3-4", "0-0", "1-2"]  # strings decode to str
    stats = ds.pool.stats()
    assert stats.hdf5_opens >= 3
    assert stats.peak_open_files <= 3


def test_transform_is_applied_once_when_files_disagree(tmp_path: Path) -> None:
    paths = []
    for number, width in enumerate((3, 5)):
        path = tmp_path / f"w{width}.h5"
        with h5py.File(path, "w") as f:
            f["x"] = np.full((4, width), number, "i4")
        paths.append(str(path))
    calls: list[int] = []

    def transform(sample: dict[str, object]) -> dict[str, object]:
        calls.append(1)
        return {"x": sample["x"], "seen": len(calls)}

    ds = PooledH5Dataset(paths, "x", transform=transform)
    batch = ds.__getitems__([0, 5, 1])
    assert len(calls) == 3
    assert [tuple(s["x"].shape) for s in batch] == [(3,), (5,), (3,)]
    with pytest.raises(LayoutError) as info:
        ds.read_batch([0, 5])
    assert paths[0] in str(info.value) and paths[1] in str(info.value)


def test_corrupt_chunk_names_file_key_and_sample(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "x",
            data=np.arange(400, dtype="f4").reshape(40, 10),
            chunks=(10, 10),
            compression="gzip",
        )
    ds = PooledH5Dataset(path, "x")
    offset = ds.index.maps["x"].chunks[2][0]
    with open(path, "r+b") as f:
        f.seek(int(offset) + 4)
        f.write(b"\xff\x00\xff\x00")
    os.utime(path, ns=(ds.index.mtimes[0], ds.index.mtimes[0]))
    assert float(ds[5]["x"][0]) == 50.0
    with pytest.raises(ReadError) as info:
        ds.read_batch([1, 25])
    message = str(info.value)
    assert str(path) in message and "'x'" in message and "sample 25" in message
    assert info.value.__cause__ is not None


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=5000), st.integers(1, 9))
def test_fast_inflate_equals_zlib(data: bytes, level: int) -> None:
    packed = zlib.compress(data, level)
    assert bytes(inflate(packed, (level,), len(data))) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.sampled_from([1, 2, 3, 4, 8, 16]))
def test_unshuffle_inverts_hdf5_shuffle(data: bytes, itemsize: int) -> None:
    count = len(data) // itemsize
    whole = np.frombuffer(data[: count * itemsize], np.uint8).reshape(count, itemsize)
    shuffled = whole.T.tobytes() + data[count * itemsize :]
    assert memoryview(unshuffle(shuffled, (itemsize,), len(data))).tobytes() == data


def test_threads_asking_at_once_share_one_engine(tmp_path: Path) -> None:
    """A Loader's threads start together: one engine (one chunk cache, one count)."""
    ds = PooledH5Dataset(make_corpus(tmp_path / "c", files=3, rows=4, width=2), "data")
    for _ in range(20):
        ds._engine = None
        start = threading.Barrier(8)
        engines: list[object] = []

        def ask(start: threading.Barrier, engines: list[object]) -> None:
            start.wait(timeout=120)  # a hang guard: a broken barrier fails the count below
            engines.append(ds.engine)

        threads = [threading.Thread(target=ask, args=(start, engines)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(engines) == 8 and len({id(engine) for engine in engines}) == 1


def test_concurrent_callers_get_their_own_batches(tmp_path: Path) -> None:
    files = make_corpus(
        tmp_path / "c", files=8, rows=30, width=16, chunks=(4, 16), compression="gzip"
    )
    ds = PooledH5Dataset(
        files, ["data", "label"], max_open=3, num_threads=2, chunk_cache_bytes=8192
    )
    failures: list[str] = []

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(40):
            indices = rng.integers(0, len(ds), 33)
            batch = ds.read_batch(indices)
            wanted = [encoded(*divmod(int(i), 30)) for i in indices]
            if batch["label"].tolist() != wanted or not bool(
                (batch["data"] == batch["label"][:, None].float()).all()
            ):
                failures.append(f"seed {seed}")

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not failures
    assert ds.pool.stats().pinned_files == 0


def _child_reads(ds: PooledH5Dataset, queue: multiprocessing.Queue[object]) -> None:
    batch = ds.read_batch(list(range(0, len(ds), 3)))
    queue.put(batch["label"].tolist())


def test_threads_and_cache_survive_fork(tmp_path: Path) -> None:
    files = make_corpus(
        tmp_path / "c", files=4, rows=12, width=4, chunks=(4, 4), compression="gzip"
    )
    ds = PooledH5Dataset(files, ["data", "label"], num_threads=2)
    before = ds.read_batch(list(range(0, len(ds), 3)))["label"].tolist()
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(target=_child_reads, args=(ds, queue))
    child.start()
    after = queue.get(timeout=300)
    child.join(timeout=300)
    assert child.exitcode == 0 and after == before


def test_an_index_cached_under_sec2_read_with_another_driver(tmp_path: Path) -> None:
    files = make_corpus(tmp_path / "c", files=3, rows=6, width=2, chunks=(2, 2), compression="gzip")
    cache = tmp_path / "index.npz"
    PooledH5Dataset(files, ["data", "label"], index_cache=cache)
    core = PooledH5Dataset(
        files, ["data", "label"], index_cache=cache, file_kwargs={"driver": "core"}
    )
    assert {core.engine.kind(k, 0) for k in ("data", "label")} == {"hdf5"}
    batch = core.read_batch([17, 0, 8])
    assert batch["label"].tolist() == [encoded(2, 5), encoded(0, 0), encoded(1, 2)]
    assert bool((batch["data"] == batch["label"][:, None].float()).all())


def test_large_contiguous_batches_spread_over_threads_read_exactly(tmp_path: Path) -> None:
    """Batches of 1 MiB or more are split by file group over threads: same bytes as h5py."""
    paths = []
    for number in range(5):
        path = tmp_path / f"wide_{number}.h5"
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(12 * 16384, dtype="<f4").reshape(12, 16384) + number * 1e6
        paths.append(str(path))
    parts = []
    for path in paths:
        with h5py.File(path, "r") as f:
            parts.append(f["x"][()])
    expected = np.concatenate(parts)
    ds = PooledH5Dataset(paths, "x", max_open=2, num_threads=3)
    indices = np.random.default_rng(4).integers(0, len(ds), 40)  # 40 x 64 KiB = 2.5 MiB
    batch = ds.read_batch(indices)["x"].numpy()
    assert batch.tobytes() == expected[indices].tobytes()
    assert ds.pool.stats().pinned_files == 0


def test_an_empty_batch_keeps_each_keys_row_shape(tmp_path: Path) -> None:
    files = make_corpus(tmp_path / "c", files=2, rows=3, width=5)
    ds = PooledH5Dataset(files, ["data", "label"])
    batch = ds.read_batch([])
    assert tuple(batch["data"].shape) == (0, 5) and tuple(batch["label"].shape) == (0,)
    assert ds.__getitems__([]) == []

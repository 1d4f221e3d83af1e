"""``__getitems__`` against ``__getitem__`` and against h5py itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from h5pool import PooledH5Dataset
from h5pool.hdf5.readers import consecutive_runs

LAYOUTS: dict[str, dict[str, Any]] = {
    "contiguous": {},
    "chunked": {"chunks": True},
    "gzip": {"chunks": True, "compression": "gzip"},
    "shuffle-lzf": {"chunks": True, "compression": "lzf", "shuffle": True},
}
DTYPES = ["float32", "float64", "float16", "int8", "uint16", "int32", "int64", ">f4", "bool"]
ROW_SHAPES = [(), (5,), (3, 4)]


def write_typed_file(
    path: Path, file_number: int, rows: int, dtype: str, shape: tuple[int, ...], **kw: Any
) -> None:
    rng = np.random.default_rng(file_number)
    raw = rng.integers(0, 100, size=(rows, *shape))
    data = (raw % 2).astype(dtype) if dtype == "bool" else raw.astype(dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, **kw)
        f.create_dataset("label", data=np.arange(rows) + 1000 * file_number)


def expected_rows(paths: list[Path], key: str) -> list[np.ndarray]:
    rows: list[np.ndarray] = []
    for path in paths:
        with h5py.File(path, "r") as f:
            rows.extend(np.asarray(f[key][...]))
    return rows


def same(tensor: Any, array: np.ndarray) -> bool:
    got = tensor.numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    return got.shape == array.shape and bool(
        np.array_equal(got, array.astype(array.dtype.newbyteorder("=")))
    )


@pytest.mark.parametrize("storage", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
def test_getitems_equals_getitem_and_h5py(
    tmp_path: Path, storage: str, dtype: str, shape: tuple[int, ...]
) -> None:
    paths = []
    for number, rows in enumerate((7, 1, 12)):
        path = tmp_path / f"f{number}.h5"
        write_typed_file(path, number, rows, dtype, shape, **LAYOUTS[storage])
        paths.append(path)
    ds = PooledH5Dataset(paths, ["x", "label"], max_open=2)
    truth = expected_rows(paths, "x")
    request = [3, 19, 0, 7, 8, 8, -1, 3, 10, 11, 12, 4, 5, 6, 0]
    batch = ds.__getitems__(request)
    assert len(batch) == len(request)
    for index, sample in zip(request, batch, strict=True):
        single = ds[index]
        assert same(sample["x"], truth[index]), (index, sample["x"], truth[index])
        assert same(single["x"], truth[index])
        assert int(sample["label"]) == int(single["label"])
        assert sample["x"].dtype == single["x"].dtype
    assert ds.__getitems__([]) == []


def test_byte_maps_are_used_only_where_safe(tmp_path: Path) -> None:
    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w") as f:
        f["plain"] = np.zeros((4, 2), "f4")
        f["plain"][3] = 7
        f.create_dataset("chunked", data=np.zeros((4, 2), "f4"), chunks=(2, 2))
        f.create_dataset("empty", shape=(4, 2), dtype="f4")  # never written: no offset
        f["text"] = np.array([b"ab", b"cd", b"ef", b"gh"])
    keys = ["plain", "chunked", "empty", "text"]
    ds = PooledH5Dataset(path, keys, max_open=1)
    kinds = {key: ds.engine.kind(key, 0) for key in keys}
    assert kinds == {"plain": "contiguous", "chunked": "chunked", "empty": "hdf5", "text": "hdf5"}
    batch = ds.read_batch([0, 1, 3])
    assert np.array_equal(batch["plain"].numpy(), np.array([[0, 0], [0, 0], [7, 7]], "f4"))
    assert np.array_equal(ds[2]["empty"].numpy(), np.zeros(2, "f4"))
    assert ds[1]["text"] == "cd"  # strings decode to str
    core = PooledH5Dataset(path, keys, max_open=1, file_kwargs={"driver": "core"})
    assert {core.engine.kind(key, 0) for key in keys} == {"hdf5"}
    assert np.array_equal(core[3]["plain"].numpy(), [7, 7])


def test_strings_rows_layout(tmp_path: Path) -> None:
    path = tmp_path / "strings.h5"
    with h5py.File(path, "w") as f:
        f["name"] = np.array([b"alpha", b"beta", b"gamma"])
        f["label"] = np.arange(3)
    ds = PooledH5Dataset(path, ["name", "label"])
    assert ds[1]["name"] == "beta"
    assert [s["name"] for s in ds.__getitems__([2, 0, 2])] == ["gamma", "alpha", "gamma"]
    assert ds.read_batch([1, 0])["name"] == ["beta", "alpha"]
    raw = PooledH5Dataset(path, ["name", "label"], strings="bytes")
    assert raw[1]["name"] == b"beta" and raw.read_batch([2])["name"] == [b"gamma"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 59), min_size=1, max_size=100))
def test_batches_of_any_order_and_duplicates(
    tmp_path_factory: pytest.TempPathFactory, request: list[int]
) -> None:
    directory = tmp_path_factory.getbasetemp() / "batched_hypothesis"
    if not directory.exists():
        directory.mkdir()
        from helpers.corpus import make_corpus

        make_corpus(directory, files=3, rows=20, width=3)
        make_corpus(directory / "gz", files=3, rows=20, width=3, chunks=(4, 3), compression="gzip")
    for spec in (os.path.join(directory, "*.h5"), os.path.join(directory, "gz")):
        ds = PooledH5Dataset(spec, ["data", "label"], max_open=2)
        batch = ds.__getitems__(request)
        assert [divmod(int(s["label"]), 1000) for s in batch] == [divmod(i, 20) for i in request]
        assert all(bool((s["data"] == s["label"].float()).all()) for s in batch)


@given(st.sets(st.integers(0, 200), min_size=1))
def test_consecutive_runs(rows: set[int]) -> None:
    ordered = np.array(sorted(rows), dtype=np.int64)
    starts, lengths = consecutive_runs(ordered)
    rebuilt = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
    assert np.array_equal(rebuilt, ordered)
    assert all(b > a + n for a, n, b in zip(starts[:-1], lengths[:-1], starts[1:], strict=True))

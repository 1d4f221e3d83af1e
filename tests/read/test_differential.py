"""Every read path against plain h5py, byte for byte, over dtypes, layouts, filters, shapes.

Each case writes two real files with one dataset ``x`` stored the way the case
says; element values encode the file and position.  Then ``ds[i]``,
``__getitems__``, and ``read_batch`` (one thread and two, with and without the
decoded-chunk cache) must give exactly h5py's bytes, or a ``CorpusError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h5pool import PooledH5Dataset
from helpers.filter_masks import write_with_filter_masks

ROWS = 11
Writer = Callable[[h5py.File, str, np.ndarray], None]


def values(file_number: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Elements that differ by file and by position (wrapping for narrow types)."""
    count = int(np.prod(shape))
    raw = np.arange(count, dtype=np.int64).reshape(shape) + 1000 * file_number
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return ((raw * 7 + file_number) % 3 == 0).astype(dtype)
    if dtype.kind == "c":
        return (raw + 1j * (raw % 5)).astype(dtype)
    if dtype.kind in "iu":
        return (raw % (1 << min(8 * dtype.itemsize - 1, 62))).astype(dtype)
    return (raw / 4).astype(dtype)


def plain(**options: Any) -> Writer:
    def write(f: h5py.File, name: str, data: np.ndarray) -> None:
        f.create_dataset(name, data=data, **options)

    return write


def partly_written(f: h5py.File, name: str, data: np.ndarray) -> None:
    """Chunked with a fill value; only some chunks ever written."""
    dataset = f.create_dataset(
        name, shape=data.shape, dtype=data.dtype, chunks=(2, *data.shape[1:]), fillvalue=3
    )
    dataset[1:4] = data[1:4]
    dataset[9] = data[9]


def reduced_precision(f: h5py.File, name: str, data: np.ndarray) -> None:
    file_type = h5py.h5t.STD_I16LE.copy()
    file_type.set_precision(12)
    space = h5py.h5s.create_simple(data.shape)
    h5py.h5d.create(f.id, name.encode(), file_type, space)
    f[name][...] = data.astype(np.int16) % 2048 - 1024


def compound(f: h5py.File, name: str, data: np.ndarray) -> None:
    record = np.dtype([("a", "<i4"), ("b", ">f8"), ("c", "u1", (2,))])
    out = np.zeros(data.shape[0], dtype=record)
    out["a"] = data.reshape(len(data), -1)[:, 0]
    out["b"] = out["a"] / 2
    out["c"] = out["a"][:, None] % 7
    f.create_dataset(name, data=out, chunks=(4,), compression="gzip")


def array_type(axes: tuple[int, ...], **options: Any) -> Writer:
    """Elements of an HDF5 array type (``np.dtype(("<f4", axes))``): h5py reads
    them as rows with trailing axes ``axes``, and so must every path."""

    def write(f: h5py.File, name: str, data: np.ndarray) -> None:
        element = np.dtype((data.dtype.str, axes))
        inner = np.arange(int(np.prod(axes))).reshape(axes).astype(data.dtype)
        full = data.reshape(*data.shape, *(1,) * len(axes)) + inner
        dataset = f.create_dataset(name, shape=data.shape, dtype=element, **options)
        dataset[...] = full

    return write


def soft_link(f: h5py.File, name: str, data: np.ndarray) -> None:
    f.create_dataset("group/target", data=data, chunks=(3, *data.shape[1:]), compression="gzip")
    f[name] = h5py.SoftLink("/group/target")


def compact(f: h5py.File, name: str, data: np.ndarray) -> None:
    space = h5py.h5s.create_simple(data.shape)
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.COMPACT)
    h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(data.dtype), space, dcpl=plist)
    f[name][...] = data


def external_raw(f: h5py.File, name: str, data: np.ndarray) -> None:
    raw = f.filename + ".raw"
    data.tofile(raw)
    f.create_dataset(name, shape=data.shape, dtype=data.dtype, external=[(raw, 0, data.nbytes)])


def virtual(f: h5py.File, name: str, data: np.ndarray) -> None:
    source = f.filename + ".source.h5"
    with h5py.File(source, "w") as s:
        s["part"] = data
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    layout[...] = h5py.VirtualSource(source, "part", shape=data.shape)
    f.create_virtual_dataset(name, layout, fillvalue=0)


def external_link(f: h5py.File, name: str, data: np.ndarray) -> None:
    """``x`` lives in another file, reached through an external link."""
    target = f.filename + ".target.h5"
    with h5py.File(target, "w") as t:
        t.create_dataset("padding", data=np.full(4096, 255, "u1"))
        t["x"] = data
    f.create_dataset("padding", data=np.zeros(512, "u1"))
    f[name] = h5py.ExternalLink(os.path.basename(target), "/x")


DTYPES = ["<i4", ">i4", "<f2", ">f8", "?", "<c8", "u1", "<i8", "<u2", "g"]
SHAPES = [(ROWS,), (ROWS, 5), (ROWS, 3, 4), (ROWS, 2, 3, 2)]
STORAGE: dict[str, tuple[Any, Writer]] = {
    "contiguous": (None, plain()),
    "chunked-edges": (None, plain(chunks=True)),
    "gzip1": (None, plain(chunks=True, compression="gzip", compression_opts=1)),
    "gzip4-shuffle": (None, plain(chunks=True, compression="gzip", shuffle=True)),
    "gzip9": (None, plain(chunks=True, compression="gzip", compression_opts=9)),
    "lzf": (None, plain(chunks=True, compression="lzf")),
    "zstd": (None, plain(chunks=True, **hdf5plugin.Zstd())),
    "blosc-lz4-shuffle": (None, plain(chunks=True, **hdf5plugin.Blosc("lz4", 5, 1))),
    "blosc-zstd-bitshuffle": (None, plain(chunks=True, **hdf5plugin.Blosc("zstd", 3, 2))),
    "lz4-plugin": (None, plain(chunks=True, **hdf5plugin.LZ4())),
    "lz4-plugin-small-blocks": (None, plain(chunks=True, **hdf5plugin.LZ4(nbytes=24))),
    "bitshuffle-plugin": (None, plain(chunks=True, **hdf5plugin.Bitshuffle())),
    "fletcher32": (None, plain(chunks=True, fletcher32=True)),
    "scaleoffset": ("<i4", plain(chunks=True, scaleoffset=0)),
    "partly-written": (None, partly_written),
    "soft-link": (None, soft_link),
    "compact": (None, compact),
    "external-raw": (None, external_raw),
    "virtual": (None, virtual),
    "external-link": (None, external_link),
}
SPECIAL: dict[str, tuple[Any, Writer]] = {
    "reduced-precision": ("<i2", reduced_precision),
    "compound": ("<i4", compound),
    "enum": (h5py.enum_dtype({"red": 0, "green": 1, "blue": 7}, basetype="u1"), plain()),
    "enum-chunked": (h5py.enum_dtype({"a": 0, "b": 1}, basetype="i1"), plain(chunks=(3,))),
    "array-type": ("<f4", array_type((3,))),
    "filter-masks": ("<f4", write_with_filter_masks),
    "array-type-2d-gzip-shuffle": (
        "<i2",
        array_type((2, 2), chunks=(4, 3), compression="gzip", shuffle=True),
    ),
}


def cases() -> list[Any]:
    found = []
    for dtype in DTYPES:
        for shape in SHAPES:
            for storage in ("contiguous", "chunked-edges", "gzip4-shuffle"):
                found.append(
                    pytest.param(dtype, shape, storage, id=f"{dtype}-{len(shape)}d-{storage}")
                )
    for storage, (dtype, _) in STORAGE.items():
        for shape in ((ROWS, 5), (ROWS, 3, 4)):
            found.append(
                pytest.param(dtype or "<f4", shape, storage, id=f"{storage}-{len(shape)}d")
            )
    for name, (dtype, _) in SPECIAL.items():
        found.append(pytest.param(dtype, (ROWS, 3), name, id=name))
    return found


def write_case(directory: Path, dtype: Any, shape: tuple[int, ...], storage: str) -> list[str]:
    writer = {**STORAGE, **SPECIAL}[storage][1]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for file_number in range(2):
        path = directory / f"case_{file_number}.h5"
        userblock = {"userblock_size": 1024} if file_number == 1 else {}
        data = values(file_number, shape, dtype)
        if storage == "enum" or storage == "enum-chunked":
            data = np.array([0, 1] * 8, dtype="u1")[: shape[0]].astype(np.dtype(dtype).base)
        with h5py.File(path, "w", **userblock) as f:
            writer(f, "x", data)
        paths.append(str(path))
    return paths


def expected_rows(paths: list[str]) -> list[np.ndarray]:
    rows = []
    for path in paths:
        with h5py.File(path, "r") as f:
            rows.extend(f["x"][()])
    return rows


def as_bytes(value: Any) -> bytes:
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype.kind not in "V" and not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array).tobytes()


def native(row: Any) -> np.ndarray:
    array = np.asarray(row)
    if array.dtype.kind != "V" and not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def same(sample: dict[str, Any], row: Any) -> bool:
    """A sample equals h5py's row, byte for byte; compound rows come as one entry
    per field, ``x.<field>``."""
    fields = np.asarray(row).dtype.names
    if not fields:
        return as_bytes(sample["x"]) == as_bytes(native(row))
    return all(as_bytes(sample[f"x.{name}"]) == as_bytes(native(row[name])) for name in fields)


def check_batch(ds: PooledH5Dataset, expected: list[np.ndarray], indices: list[int]) -> None:
    for sample, index in zip(ds.__getitems__(indices), indices, strict=True):
        assert same(sample, expected[index]), index
    batch = ds.read_batch(indices)
    assert all(len(column) == len(indices) for column in batch.values())
    for position, index in enumerate(indices):
        assert same({name: column[position] for name, column in batch.items()}, expected[index])


@pytest.mark.parametrize(("dtype", "shape", "storage"), cases())
def test_every_path_equals_h5py(
    tmp_path: Path, dtype: Any, shape: tuple[int, ...], storage: str
) -> None:
    paths = write_case(tmp_path / "case", dtype, shape, storage)
    expected = expected_rows(paths)
    everything = list(range(len(expected)))
    shuffled = [*np.random.default_rng(1).permutation(everything).tolist(), 3, 3, 20, 0]
    for threads, cache in ((1, 64 << 20), (2, 64 << 20), (2, 0)):
        ds = PooledH5Dataset(paths, "x", max_open=1, num_threads=threads, chunk_cache_bytes=cache)
        for index in everything:
            assert same(ds[index], expected[index]), index
        check_batch(ds, expected, everything)
        check_batch(ds, expected, [int(i) for i in shuffled])


@pytest.fixture(scope="module")
def gzip_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[np.ndarray]]:
    directory = tmp_path_factory.mktemp("differential_gzip")
    paths = []
    for number in range(4):
        path = directory / f"part_{number}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset(
                "x",
                data=values(number, (13 + number, 6, 5), "<f4"),
                chunks=(4, 4, 3),
                compression="gzip",
                shuffle=True,
            )
        paths.append(str(path))
    return paths, expected_rows(paths)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    indices=st.lists(st.integers(0, 57), min_size=1, max_size=80),
    threads=st.sampled_from([1, 2, 3]),
    cache=st.sampled_from([0, 4096, 64 << 20]),
)
def test_random_batches_with_duplicates(
    gzip_corpus: tuple[list[str], list[np.ndarray]], indices: list[int], threads: int, cache: int
) -> None:
    paths, expected = gzip_corpus
    ds = PooledH5Dataset(paths, "x", max_open=2, num_threads=threads, chunk_cache_bytes=cache)
    check_batch(ds, expected, indices)


HDF5_PATHS = {
    "bitshuffle-plugin",
    "fletcher32",
    "scaleoffset",
    "compact",
    "external-raw",
    "virtual",
    "external-link",
    "reduced-precision",
    "compound",
    "array-type",
    "array-type-2d-gzip-shuffle",
}


@pytest.mark.parametrize("storage", [*STORAGE, *SPECIAL])
def test_each_storage_takes_the_expected_path(tmp_path: Path, storage: str) -> None:
    """Byte maps where they are exact; HDF5 for the rest, never a wrong descriptor."""
    dtype = {**STORAGE, **SPECIAL}[storage][0] or "<f4"
    paths = write_case(tmp_path / "case", dtype, (ROWS, 3), storage)
    ds = PooledH5Dataset(paths, "x")
    kinds = {ds.engine.kind("x", number) for number in range(2)}
    if storage in HDF5_PATHS:
        assert kinds == {"hdf5"}
    elif storage in ("contiguous", "enum"):
        assert kinds == {"contiguous"}
    else:
        assert kinds == {"chunked"}


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, list]]:
    """40 files whose keys are stored differently from file to file: ``a`` contiguous
    in some and gzip in others, ``b`` in chunks that hold whole rows, ``c`` in
    chunks that cut rows, ``d`` reduced precision (HDF5 only) in every fifth file."""
    directory = tmp_path_factory.mktemp("differential_mixed")
    paths, expected = [], {key: [] for key in "abcd"}
    for number in range(40):
        path = directory / f"mixed_{number:02d}.h5"
        rows = 3 + number % 7
        with h5py.File(path, "w") as f:
            a = values(number, (rows, 6), "<f4")
            f.create_dataset(
                "a", data=a, **({"chunks": (2, 6), "compression": "gzip"} if number % 2 else {})
            )
            f.create_dataset(
                "b",
                data=values(number, (rows, 4), "<i2"),
                chunks=(3, 4),
                compression="gzip",
                shuffle=True,
            )
            f.create_dataset(
                "c", data=values(number, (rows, 5), "<f8"), chunks=(2, 2), compression="gzip"
            )
            if number % 5 == 0:
                reduced_precision(f, "d", values(number, (rows, 2), "<i2"))
            else:
                f.create_dataset("d", data=values(number, (rows, 2), "<i2") % 2048 - 1024)
        paths.append(str(path))
        with h5py.File(path, "r") as f:
            for key in "abcd":
                expected[key].extend(f[key][()])
    return paths, expected


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    indices=st.lists(st.integers(0, 239), min_size=1, max_size=120),
    threads=st.sampled_from([1, 2]),
    max_open=st.sampled_from([2, 7, 64]),
    cache=st.sampled_from([0, 64 << 20]),
)
def test_batches_over_many_files_of_mixed_storage_equal_h5py(
    mixed_corpus: tuple[list[str], dict[str, list]],
    indices: list[int],
    threads: int,
    max_open: int,
    cache: int,
) -> None:
    """Duplicates, any order, many files, fewer descriptors than files: every
    plan (kernel rows, whole chunks, cut chunks, HDF5) against h5py."""
    paths, expected = mixed_corpus
    ds = PooledH5Dataset(
        paths, list("abcd"), max_open=max_open, num_threads=threads, chunk_cache_bytes=cache
    )
    total = len(ds)
    chosen = [i % total for i in indices]
    batch = ds.read_batch(chosen)
    for position, index in enumerate(chosen):
        for key in "abcd":
            assert as_bytes(batch[key][position]) == as_bytes(native(expected[key][index])), (
                key,
                index,
            )
    for index in chosen[:5]:
        sample = ds[index]
        assert all(as_bytes(sample[k]) == as_bytes(native(expected[k][index])) for k in "abcd")
    assert ds.pool.stats().peak_open_files <= max(max_open, 2)


@pytest.mark.parametrize("backend", ["isal", "zlib"])
@pytest.mark.parametrize("storage", ["gzip1", "gzip4-shuffle", "gzip9", "partly-written"])
def test_deflate_through_each_backend_equals_h5py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, storage: str
) -> None:
    """Deflate chunks decode through ISA-L's loop when it is installed and through
    the kernel's ``decode_chunks`` when it is not: both, 1 and 2 threads, against h5py."""
    from h5pool.hdf5 import decode

    monkeypatch.setattr(decode, "INFLATE_BACKEND", backend)
    paths = write_case(tmp_path / "case", "<f4", (ROWS, 5), storage)
    expected = expected_rows(paths)
    shuffled = [int(i) for i in np.random.default_rng(4).permutation(len(expected))]
    for threads in (1, 2):
        ds = PooledH5Dataset(paths, "x", num_threads=threads, chunk_cache_bytes=0)
        check_batch(ds, expected, [*shuffled, *shuffled[:5]])
        assert all(same(ds[i], expected[i]) for i in range(len(expected)))

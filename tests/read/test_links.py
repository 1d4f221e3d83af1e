"""Every layout over every way a dataset can be reached, against h5py.

Each file of a corpus reaches its data as a plain dataset, through a soft
link, through an external link into another file, or as a virtual dataset
over another file.  Each linking file also holds a large local dataset of
decoy values (-9) written first, so a read from the wrong descriptor at the
target's offset returns decoys instead of failing.  Every read path (``ds[i]``,
``__getitems__``, ``read_batch``, the threaded ``Loader``, windows) must give
h5py's values, read through the linking file, byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from h5pool import Loader, PooledH5Dataset
from h5pool.hdf5.readers import direct_offset

FILES = 2
#: How the data is reached; "array-type" is a plain dataset whose elements are an
#: HDF5 array type holding the last axis, which h5py reads as that axis.
LINKS = ["plain", "soft-link", "external-link", "virtual", "array-type"]
STORAGE: dict[str, dict[str, Any]] = {
    "contiguous": {},
    "gzip-shuffle": {"chunks": True, "compression": "gzip", "shuffle": True},
}
Place = Callable[[h5py.File, str, np.ndarray], None]


def code(file_number: int, item: int, shape: tuple[int, ...]) -> np.ndarray:
    """Values that name their file, item and position: 10000 * file + 100 * item + position."""
    positions = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    return (10000 * file_number + 100 * item + positions).astype("<f4")


def placer(link: str, storage: dict[str, Any], folder: Path, file_number: int) -> Place:
    """A function that puts ``data`` at ``name`` in ``f``, reached the way ``link`` says."""
    elsewhere = folder / "targets" / f"target-{file_number}.h5"

    def place(f: h5py.File, name: str, data: np.ndarray) -> None:
        hidden = "/store/" + name.strip("/").replace("/", "_")
        if link == "plain":
            f.create_dataset(name, data=data, **storage)
        elif link == "array-type":
            element = np.dtype((data.dtype.str, data.shape[-1:]))
            f.create_dataset(name, shape=data.shape[:-1], dtype=element, **storage)[...] = data
        elif link == "soft-link":
            f.create_dataset(hidden, data=data, **storage)
            f[name] = h5py.SoftLink(hidden)
        else:
            elsewhere.parent.mkdir(exist_ok=True)
            with h5py.File(elsewhere, "a") as target:
                target.create_dataset(hidden, data=data, **storage)
            if link == "external-link":
                f[name] = h5py.ExternalLink(str(elsewhere), hidden)
            else:
                layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
                layout[...] = h5py.VirtualSource(str(elsewhere), hidden, shape=data.shape)
                f.create_virtual_dataset(name, layout, fillvalue=0)

    return place


def write_corpus(folder: Path, layout: str, link: str, storage: str) -> list[str]:
    """Two linking files in ``folder/corpus``, each with its decoy written first."""
    (folder / "corpus").mkdir(parents=True)
    paths = []
    for file_number in range(FILES):
        path = folder / "corpus" / f"links-{file_number}.h5"
        place = placer(link, STORAGE[storage], folder, file_number)
        with h5py.File(path, "w") as f:
            f.create_dataset("zz_own", data=np.full((800, 8), -9, "f4"))
            if layout == "rows":
                place(f, "x", code(file_number, 0, (7 + file_number, 5)))
            elif layout == "members":
                f.create_group("traj")
                for member in range(4):
                    place(f, f"traj/m_{member}", code(file_number, member, (3 + member, 5)))
            else:
                for demo in range(3):
                    length = 4 + demo + file_number
                    place(f, f"data/demo_{demo}/actions", code(file_number, demo, (length, 2)))
                    place(f, f"data/demo_{demo}/obs", code(file_number, 10 + demo, (length, 3, 2)))
        paths.append(str(path))
    return paths


def expected_samples(paths: list[str], layout: str, window: int = 0) -> list[dict[str, Any]]:
    """The samples as h5py reads them through the linking files."""
    samples: list[dict[str, Any]] = []
    for path in paths:
        with h5py.File(path, "r") as f:
            if layout == "rows":
                samples.extend({"x": row} for row in f["x"][()])
            elif layout == "members":
                samples.extend({"data": f["traj"][f"m_{m}"][()]} for m in range(4))
            else:
                for demo in range(3):
                    group = f[f"data/demo_{demo}"]
                    arrays = {key: group[key][()] for key in ("actions", "obs")}
                    if not window:
                        samples.append(arrays)
                        continue
                    for start in range(len(arrays["actions"]) - window + 1):
                        samples.append({k: v[start : start + window] for k, v in arrays.items()})
    return samples


def same(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Every key's bytes equal h5py's; a decoy (-9) never appears."""
    for key, value in expected.items():
        array = got[key].numpy() if isinstance(got[key], torch.Tensor) else np.asarray(got[key])
        if array.dtype != value.dtype or array.tobytes() != value.tobytes():
            return False
    return True


def dataset_of(paths: list[str], layout: str, window: int = 0, **options: Any) -> PooledH5Dataset:
    if layout == "rows":
        return PooledH5Dataset(paths, "x", **options)
    if layout == "members":
        return PooledH5Dataset(paths, layout="members", group="traj", **options)
    return PooledH5Dataset(
        paths, ["actions", "obs"], layout="groups", group="data", window=window, **options
    )


CASES = [
    pytest.param(layout, link, storage, id=f"{layout}-{link}-{storage}")
    for layout in ("rows", "members", "groups")
    for link in LINKS
    for storage in STORAGE
]


@pytest.mark.parametrize(("layout", "link", "storage"), CASES)
def test_every_layout_over_every_link_equals_h5py(
    tmp_path: Path, layout: str, link: str, storage: str
) -> None:
    paths = write_corpus(tmp_path, layout, link, storage)
    expected = expected_samples(paths, layout)
    shuffled = [int(i) for i in np.random.default_rng(3).permutation(len(expected))]
    for threads in (1, 2):
        ds = dataset_of(paths, layout, max_open=1, num_threads=threads)
        assert len(ds) == len(expected)
        for index, wanted in enumerate(expected):
            assert same(ds[index], wanted), (index, "ds[i]")
        for index, sample in zip(shuffled, ds.__getitems__(shuffled), strict=True):
            assert same(sample, expected[index]), (index, "__getitems__")
        if layout == "rows":
            batch = ds.read_batch(shuffled)
            for position, index in enumerate(shuffled):
                row = {key: column[position] for key, column in batch.items()}
                assert same(row, expected[index]), (index, "read_batch")
    loader = DataLoader(dataset_of(paths, layout), batch_size=None, num_workers=1)
    for index, sample in enumerate(loader):
        assert same(sample, expected[index]), (index, "DataLoader worker")


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("storage", list(STORAGE))
def test_windows_over_every_link_equal_h5py(tmp_path: Path, link: str, storage: str) -> None:
    """Windows of groups, one at a time, in batches, and through the threaded Loader."""
    paths = write_corpus(tmp_path, "groups", link, storage)
    expected = expected_samples(paths, "groups", window=2)
    ds = dataset_of(paths, "groups", window=2, max_open=1)
    for index, wanted in enumerate(expected):
        assert same(ds[index], wanted), index
    batch = ds.read_batch(list(range(len(expected))))
    for index, wanted in enumerate(expected):
        assert same({key: batch[key][index] for key in wanted}, wanted), index
    seen = 0
    for batch in Loader(ds, batch_size=4, shuffle=False, num_threads=2):
        for position in range(len(batch["actions"])):
            assert same({key: batch[key][position] for key in ("actions", "obs")}, expected[seen])
            seen += 1
    assert seen == len(expected)


@pytest.mark.parametrize("link", LINKS)
def test_rows_through_the_threaded_loader_over_links(tmp_path: Path, link: str) -> None:
    paths = write_corpus(tmp_path, "rows", link, "contiguous")
    expected = expected_samples(paths, "rows")
    ds = dataset_of(paths, "rows", max_open=1)
    rows = [
        batch["x"][position]
        for batch in Loader(ds, batch_size=3, shuffle=False, num_threads=2)
        for position in range(len(batch["x"]))
    ]
    assert len(rows) == len(expected)
    for got, wanted in zip(rows, expected, strict=True):
        assert same({"x": got}, wanted)


def test_the_issue_repro_reads_the_target(tmp_path: Path) -> None:
    """The members layout over external links once read -9 from the linking file."""
    (tmp_path / "tgt").mkdir()
    (tmp_path / "d").mkdir()
    for f in range(2):
        with h5py.File(tmp_path / f"tgt/mem-target-{f}.h5", "w") as h:
            for t in range(4):
                h.create_dataset(f"trajectory_{t}", data=np.full((3 + t, 5), 100 * f + t, "f4"))
        with h5py.File(tmp_path / f"d/links-{f}.h5", "w") as h:
            h.create_dataset("zz_own", data=np.full((800, 8), -9, "f4"))
            for t in range(4):
                target = os.path.abspath(tmp_path / f"tgt/mem-target-{f}.h5")
                h[f"trajectory_{t}"] = h5py.ExternalLink(target, f"/trajectory_{t}")
    ds = PooledH5Dataset(tmp_path / "d", layout="members")
    assert len(ds) == 10  # trajectory_0..3 and zz_own, per file
    assert torch.equal(ds[0]["data"], torch.zeros(3, 5))
    assert torch.equal(ds[8]["data"], torch.full((6, 5), 103.0))
    assert torch.equal(ds[9]["data"], torch.full((800, 8), -9.0))


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("storage", list(STORAGE))
def test_byte_maps_only_where_the_file_holds_the_bytes(
    tmp_path: Path, link: str, storage: str
) -> None:
    """The audit of issue 18: a byte map is an offset into the descriptor it is
    read from, so data reached through another file goes through HDF5."""
    paths = write_corpus(tmp_path, "rows", link, storage)
    ds = dataset_of(paths, "rows")
    kinds = {ds.engine.kind("x", number) for number in range(FILES)}
    own = {"contiguous": "contiguous", "gzip-shuffle": "chunked"}[storage]
    assert kinds == ({own} if link in ("plain", "soft-link") else {"hdf5"})
    with h5py.File(paths[0], "r") as f:
        offset = direct_offset(f["x"], paths[0])
    assert (offset is not None) == (link in ("plain", "soft-link") and storage == "contiguous")

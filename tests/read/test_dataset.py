from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from h5pool import HandlePool, PooledH5Dataset
from helpers.corpus import decode_sample, encoded, make_corpus, open_hdf5_descriptors


def scale_data(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"data": sample["data"] * 2, "label": sample["label"]}


def test_rows_layout_reads_every_sample_in_order(small_corpus: list[str]) -> None:
    ds = PooledH5Dataset(small_corpus, ["data", "label"], max_open=2)
    assert len(ds) == 50
    assert ds.files == [os.path.realpath(p) for p in small_corpus]
    for i in range(len(ds)):
        sample = ds[i]
        assert set(sample) == {"data", "label"}
        assert sample["data"].dtype == torch.float32 and sample["data"].shape == (4,)
        assert decode_sample(sample) == divmod(i, 10)
    assert ds.pool.stats().peak_open_files <= 2


def test_negative_indices_bounds_and_locate(small_corpus: list[str]) -> None:
    ds = PooledH5Dataset(small_corpus, ["data", "label"])
    assert decode_sample(ds[-1]) == (4, 9)
    assert decode_sample(ds[-50]) == (0, 0)
    assert ds.locate(23) == (os.path.realpath(small_corpus[2]), 3)
    assert ds.locate(-1) == (os.path.realpath(small_corpus[4]), 9)
    for bad in (50, -51, 10**9):
        with pytest.raises(IndexError):
            ds[bad]
        with pytest.raises(IndexError):
            ds.locate(bad)
    with pytest.raises(IndexError):
        ds.__getitems__([0, 50])


def test_single_key_string(small_corpus: list[str]) -> None:
    ds = PooledH5Dataset(small_corpus[0], "label")
    assert len(ds) == 10
    assert ds[4] == {"label": torch.tensor(encoded(0, 4))}


@pytest.mark.parametrize("form", ["directory", "glob", "list", "mixed"])
def test_file_specs(small_corpus: list[str], tmp_path: Path, form: str) -> None:
    directory = os.path.dirname(small_corpus[0])
    spec: object = {
        "directory": directory,
        "glob": os.path.join(directory, "shard_*.h5"),
        "list": small_corpus,
        "mixed": [small_corpus[0], os.path.join(directory, "shard_0000[1-4].h5")],
    }[form]
    ds = PooledH5Dataset(spec, ["data", "label"])  # type: ignore[arg-type]
    assert ds.files == [os.path.realpath(p) for p in small_corpus]


def test_directory_is_recursive_and_naturally_sorted(tmp_path: Path) -> None:
    root = tmp_path / "nested"
    (root / "b").mkdir(parents=True)
    names = ["b/part_10.h5", "part_2.hdf5", "b/part_9.h5", "part_10.h5"]
    for number, name in enumerate(names):
        from helpers.corpus import write_rows_file

        write_rows_file(root / name, number, rows=1)
    (root / "notes.txt").write_text("not data")
    ds = PooledH5Dataset(root, "label")
    assert [os.path.relpath(p, root) for p in ds.files] == [
        "b/part_9.h5",
        "b/part_10.h5",
        "part_2.hdf5",
        "part_10.h5",
    ]


def test_duplicate_paths_are_served_once(small_corpus: list[str]) -> None:
    ds = PooledH5Dataset([small_corpus[0], small_corpus[0], small_corpus[1]], "label")
    assert len(ds) == 20


def test_members_layout(tmp_path: Path) -> None:
    paths = []
    for number in range(3):
        path = tmp_path / f"traj_{number}.h5"
        with h5py.File(path, "w") as f:
            group = f.create_group("runs")
            for member in (10, 2, 1):
                d = group.create_dataset(
                    f"trajectory_{member}", data=np.full((member, 3), encoded(number, member))
                )
                d.attrs["name"] = f"run {member}"
                d.attrs["steps"] = member
                d.attrs["tags"] = np.array([b"a", b"b"])
            group.create_group("not_a_sample")
            group.create_dataset("chunked_7", data=np.arange(7.0), chunks=(2,), compression="gzip")
        paths.append(path)
    ds = PooledH5Dataset(paths, layout="members", group="runs", max_open=1)
    assert len(ds) == 12
    first = ds[0]
    assert first["data"].shape == (2,) or first["data"].shape == (7,)
    # natural order: chunked_7, trajectory_1, trajectory_2, trajectory_10
    assert torch.equal(ds[0]["data"], torch.arange(7.0, dtype=torch.float64))
    for number in range(3):
        for slot, member in enumerate((1, 2, 10), start=1):
            sample = ds[number * 4 + slot]
            assert sample["data"].shape == (member, 3)
            assert bool((sample["data"] == encoded(number, member)).all())
            assert sample["attrs"] == {"name": f"run {member}", "steps": member, "tags": ["a", "b"]}
            assert isinstance(sample["attrs"]["name"], str)
    batch = ds.__getitems__([11, 1, 1, 4])
    assert [b["attrs"].get("steps") for b in batch] == [10, 1, 1, None]
    assert ds.locate(5) == (os.path.realpath(paths[1]), 1)


def test_transform_is_applied(small_corpus: list[str]) -> None:
    ds = PooledH5Dataset(small_corpus, ["data", "label"], transform=scale_data)
    assert torch.equal(ds[12]["data"], torch.full((4,), 2.0 * encoded(1, 2)))
    assert torch.equal(ds.__getitems__([12])[0]["data"], torch.full((4,), 2.0 * encoded(1, 2)))


def test_construction_leaves_no_handle_open(small_corpus: list[str]) -> None:
    before = open_hdf5_descriptors()
    ds = PooledH5Dataset(small_corpus, ["data", "label"])
    assert len(ds.pool) == 0
    assert open_hdf5_descriptors() == before
    ds[0]
    assert open_hdf5_descriptors() == before + 1


def test_pickle_has_no_handles_and_stays_small(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path / "c", files=20, rows=500, width=2)
    ds = PooledH5Dataset(paths, ["data", "label"], max_open=3, transform=scale_data)
    ds[0]
    payload = pickle.dumps(ds)
    assert b"h5py._hl" not in payload
    # 10,000 samples: the index grows with files, not samples.
    assert len(payload) < 20 * 400 + 4000
    clone = pickle.loads(payload)
    assert len(clone.pool) == 0 and clone.pool.max_open == 3
    assert clone.pool is not ds.pool
    assert torch.equal(clone[777]["data"], ds[777]["data"])
    sample = clone[777]
    assert int(sample["label"]) == encoded(1, 277)
    assert bool((sample["data"] == 2.0 * encoded(1, 277)).all())


def test_shared_pool(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=3)
    a = PooledH5Dataset(small_corpus, "data", pool=pool)
    b = PooledH5Dataset(small_corpus, "label", pool=pool)
    assert a.pool is b.pool is pool
    assert float(a[13]["data"][0]) == float(b[13]["label"]) == encoded(1, 3)
    with pytest.raises(ValueError):
        PooledH5Dataset(small_corpus, pool=pool, max_open=3)


def test_bad_arguments(small_corpus: list[str]) -> None:
    with pytest.raises(ValueError):
        PooledH5Dataset(small_corpus, layout="columns")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PooledH5Dataset(small_corpus, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PooledH5Dataset(small_corpus, keys=[])


def test_links_resolve_to_one_file(small_corpus: list[str], tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "a_link.h5").symlink_to(small_corpus[1])
    (linked / "sub").symlink_to(os.path.dirname(small_corpus[0]), target_is_directory=True)
    ds = PooledH5Dataset(linked, "label")
    # The link and the linked folder reach the same five files: each is kept once.
    assert sorted(ds.files) == sorted(os.path.realpath(p) for p in small_corpus)
    assert ds.files[0] == os.path.realpath(small_corpus[1])  # a_link.h5 sorts first
    assert len(ds) == 50

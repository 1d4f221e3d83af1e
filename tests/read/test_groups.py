"""The "groups" layout on robomimic-style files: whole demonstrations and windows."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from h5pool import LayoutError, Loader, MissingKeyError, PooledH5Dataset, ReadError
from helpers.robomimic import demo_lengths, step_code, write_robomimic_corpus, write_robomimic_file

KEYS = ["actions", "obs/agentview_image", "rewards"]
FILES, DEMOS = 4, 3


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    write_robomimic_corpus(tmp_path / "robot", FILES, DEMOS)
    return tmp_path / "robot"


def expected_windows(window: int, stride: int) -> list[tuple[int, int, int]]:
    """(file, demo, start) of every window, in index order."""
    return [
        (f, d, t)
        for f in range(FILES)
        for d, length in enumerate(demo_lengths(f, DEMOS))
        for t in range(0, length - window + 1, stride)
    ]


def check_window(sample: dict, corpus: Path, where: tuple[int, int, int], window: int) -> None:
    f, d, t = where
    with h5py.File(corpus / f"robot_{f}.hdf5") as h5:
        group = h5[f"data/demo_{d}"]
        stop = t + window if window else None
        for key in KEYS:
            expected = group[key][t:stop]
            got = sample[key]
            assert isinstance(got, torch.Tensor) and got.numpy().dtype == expected.dtype
            assert np.array_equal(got.numpy(), expected), (key, where)
        assert sample["attrs"] == {"num_samples": len(group["actions"])}
    assert int(sample["rewards"][0]) == step_code(f, d, t)


def test_whole_demonstrations(corpus: Path) -> None:
    ds = PooledH5Dataset(corpus, KEYS, layout="groups", group="data")
    assert len(ds) == FILES * DEMOS
    for i, where in enumerate(expected_windows(0, 10**6)):
        check_window(ds[i], corpus, (where[0], where[1], 0), 0)
    assert isinstance(ds.index.groups.lengths, np.ndarray)
    with pytest.raises(LayoutError, match="set window="):
        ds.read_batch([0, 1])  # demonstrations of unequal lengths


@pytest.mark.parametrize(("window", "stride"), [(4, 1), (4, 3), (5, 5)])
def test_windows_in_order_against_h5py(corpus: Path, window: int, stride: int) -> None:
    ds = PooledH5Dataset(corpus, KEYS, layout="groups", group="data", window=window, stride=stride)
    wanted = expected_windows(window, stride)
    assert len(ds) == len(wanted)
    for i, where in enumerate(wanted):
        check_window(ds[i], corpus, where, window)
    picks = [len(ds) - 1, 0, 3, 3]
    batch = ds.read_batch(picks)
    assert batch["actions"].shape == (4, window, 7)
    assert batch["obs/agentview_image"].shape == (4, window, 8, 8, 3)
    for row, pick in enumerate(picks):
        assert torch.equal(batch["actions"][row], ds[pick]["actions"])
    listed = ds.__getitems__(picks)
    for sample, pick in zip(listed, picks, strict=True):
        assert torch.equal(sample["rewards"], ds[pick]["rewards"])


def test_each_window_once_per_epoch_through_loader_and_dataloader(corpus: Path) -> None:
    ds = PooledH5Dataset(corpus, KEYS, layout="groups", group="data", window=4, stride=2)
    everything = Counter(step_code(f, d, t) for f, d, t in expected_windows(4, 2))
    loader = Loader(ds, batch_size=5, num_threads=2, seed=3)
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen = Counter(int(r) for b in loader for r in b["rewards"][:, 0])
        assert seen == everything
    workers = DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="fork")
    seen = Counter(int(r) for b in workers for r in b["rewards"][:, 0])
    assert seen == everything


def test_index_is_o_files_plus_groups_and_survives_the_cache(corpus: Path, tmp_path: Path) -> None:
    cache = tmp_path / "index.npz"
    few = PooledH5Dataset(corpus, KEYS, layout="groups", group="data", index_cache=cache, window=2)
    many = PooledH5Dataset(corpus, KEYS, layout="groups", group="data", index_cache=cache, window=1)
    assert len(many) > len(few) and many.index_stats.files_scanned == 0
    # More windows, the same index: its size follows files and groups only.
    assert abs(len(pickle.dumps(many.index)) - len(pickle.dumps(few.index))) < 32
    assert len(many.index.members.explicit) == 0  # demo_0..demo_2 kept as one template
    write_robomimic_file(corpus / "robot_9.hdf5", 9, 2)
    (corpus / "robot_1.hdf5").unlink()
    again = PooledH5Dataset(
        corpus, KEYS, layout="groups", group="data", index_cache=cache, window=2
    )
    scratch = PooledH5Dataset(corpus, KEYS, layout="groups", group="data", window=2)
    assert again.index_stats.files_scanned == 1 and again.index.same_entries(scratch.index)
    assert [int(again[i]["rewards"][0]) for i in range(len(again))] == [
        int(scratch[i]["rewards"][0]) for i in range(len(scratch))
    ]


def test_a_demo_without_a_key_or_of_unequal_lengths(corpus: Path) -> None:
    with h5py.File(corpus / "robot_2.hdf5", "a") as f:
        del f["data/demo_1/rewards"]
        del f["data/demo_2/actions"]
        f["data/demo_2"].create_dataset("actions", data=np.zeros((3, 7), "f4"))
    with pytest.raises(MissingKeyError, match=r"robot_2\.hdf5: group 'data/demo_1' has no dataset"):
        PooledH5Dataset(corpus, KEYS, layout="groups", group="data")
    ds = PooledH5Dataset(corpus, KEYS, layout="groups", group="data", on_error="skip")
    assert len(ds) == FILES * DEMOS - 2
    assert sorted(p.split("::")[1] for p, _ in ds.skipped) == ["demo_1", "demo_2"]
    assert "unequal lengths" in dict(ds.skipped)[f"{corpus / 'robot_2.hdf5'}::demo_2"]


def test_a_damaged_chunk_in_a_demo_names_the_file_and_the_demo(corpus: Path) -> None:
    path = corpus / "robot_1.hdf5"
    with h5py.File(path) as f:
        chunk = f["data/demo_2/obs/agentview_image"].id.get_chunk_info(1)
    with open(path, "r+b") as raw:  # deflate cannot decode this
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)
    ds = PooledH5Dataset(corpus, KEYS, layout="groups", group="data", window=2)
    windows = ds.index.groups.samples_per_group()
    first = int(ds.index.ends[0]) + int(windows[DEMOS : DEMOS + 2].sum())
    with pytest.raises(ReadError, match=r"robot_1\.hdf5: reading data/demo_2 failed"):
        ds[first]  # rows 0 and 1 of demo_2: the damaged chunk holds row 1
    assert ds[first - 1]["actions"].shape[0] == 2  # the file's other demos still read


def test_members_on_a_group_of_groups_points_to_groups(corpus: Path) -> None:
    with pytest.raises(LayoutError, match="layout='groups'"):
        PooledH5Dataset(corpus, layout="members", group="data")


def test_suffixes_and_files_that_are_not_hdf5(tmp_path: Path) -> None:
    from h5pool import UnreadableFileError
    from helpers.corpus import write_rows_file

    for number, name in enumerate(["a.h5", "b.nc", "d.h5ad", "e.nc4"]):
        write_rows_file(tmp_path / name, number, 2, 2)
    netcdf3 = tmp_path / "c.nc"
    netcdf3.write_bytes(b"CDF\x01" + bytes(60))  # the netCDF classic signature
    ds = PooledH5Dataset(tmp_path, ["data", "label"])
    assert [Path(p).name for p in ds.files] == ["a.h5", "b.nc", "d.h5ad", "e.nc4"]
    assert [(Path(p).name, "not an HDF5 file" in why) for p, why in ds.skipped] == [("c.nc", True)]
    with pytest.raises(UnreadableFileError, match="not an HDF5 file"):
        PooledH5Dataset([netcdf3], ["data", "label"])
    only = PooledH5Dataset(tmp_path, ["data", "label"], suffixes=[".H5"])
    assert [Path(p).name for p in only.files] == ["a.h5"]


def test_netcdf_like_members_pickle_and_leave_dimension_scales_out(tmp_path: Path) -> None:
    """Coordinate variables are dimension scales (not samples), and the references
    in DIMENSION_LIST become paths, so DataLoader workers can send attrs back."""
    for number in range(2):
        with h5py.File(tmp_path / f"nc_{number}.nc", "w") as f:
            time = f.create_dataset("time", data=np.arange(4.0))
            time.make_scale("time")
            for name in ("pressure", "wind"):
                variable = f.create_dataset(name, data=np.full((4, 2), 10.0 * number))
                variable.dims[0].attach_scale(time)
            f["wind"].attrs["source"] = f["time"].ref
    ds = PooledH5Dataset(tmp_path, layout="members", group="/")
    assert len(ds) == 4
    assert ds[1]["attrs"]["DIMENSION_LIST"] == [["/time"], []]
    assert ds[1]["attrs"]["source"] == "/time"
    workers = DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=120
    )
    seen = [(float(sample["data"][0, 0]), sample["attrs"]["DIMENSION_LIST"]) for sample in workers]
    assert seen == [(0.0, [["/time"], []])] * 2 + [(10.0, [["/time"], []])] * 2

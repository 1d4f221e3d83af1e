"""Files written by the real writers, every sample checked against plain h5py.

netCDF4, h5netcdf, pandas/PyTables (table and fixed formats), anndata (dense
and sparse), hdf5plugin filters and robomimic-style demonstrations with
strings and records per step.  Each kind is read through ``ds[i]``,
``__getitems__``, ``read_batch``, a ``Loader`` and a DataLoader with 2 worker
processes, and every value must equal what h5py reads, in type, dtype and
bytes.  The
expected values are worked out here from h5py alone, by the rules the README
gives (strings as ``str``, records as ``key.field``, ragged rows as tensors).
"""

from __future__ import annotations

import gc
import pickle
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from h5pool import CorpusError, LayoutError, Loader, MissingKeyError, PooledH5Dataset
from h5pool.index.listing import natural_key
from helpers.writers import write_all

#: kind -> the dataset's arguments: a folder of that writer's files each time.
CONFIGS: dict[str, dict[str, Any]] = {
    "netcdf4 rows": {"kind": "netcdf4", "keys": ["temp", "station", "count", "time"]},
    "netcdf4 rows bytes": {"kind": "netcdf4", "keys": ["station"], "strings": "bytes"},
    "netcdf4 members": {"kind": "netcdf4", "keys": [], "layout": "members"},
    "h5netcdf rows": {"kind": "h5netcdf", "keys": ["wind", "name", "time"]},
    "h5netcdf members": {"kind": "h5netcdf", "keys": [], "layout": "members"},
    "pandas table": {"kind": "pandas_table", "keys": ["frame/table"]},
    "pandas fixed": {
        "kind": "pandas_fixed",
        "keys": ["frame/axis1", "frame/block0_values", "frame/block1_values"],
    },
    "anndata": {"kind": "anndata", "keys": ["X", "obs/_index", "obs/score", "obs/cell/codes"]},
    "anndata sparse obs": {"kind": "anndata_sparse", "keys": ["obs/_index", "obs/score"]},
    "hdf5plugin": {"kind": "hdf5plugin", "keys": ["zstd", "blosc", "bitshuffle"]},
    "demonstrations windows": {
        "kind": "demonstrations",
        "keys": ["actions", "obs/image", "say", "state"],
        "layout": "groups",
        "group": "data",
        "window": 3,
        "stride": 2,
    },
    "demonstrations whole": {
        "kind": "demonstrations",
        "keys": ["actions", "say", "state"],
        "layout": "groups",
        "group": "data",
    },
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return write_all(tmp_path_factory.mktemp("writers"), files=3)


def open_dataset(written: dict[str, list[Path]], config: dict[str, Any]) -> PooledH5Dataset:
    options = {name: value for name, value in config.items() if name != "kind"}
    return PooledH5Dataset(written[config["kind"]][0].parent, **options)


# -- what h5py says ------------------------------------------------------------------------


def expected_samples(paths: list[Path], config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every sample of the corpus, in h5pool's order, from h5py reads alone."""
    strings = config.get("strings", "str")
    layout = config.get("layout", "rows")
    samples: list[dict[str, Any]] = []
    for path in sorted(paths, key=lambda p: natural_key(str(p))):
        with h5py.File(path) as f:
            if layout == "rows":
                keys = config["keys"]
                for row in range(f[keys[0]].shape[0]):
                    sample: dict[str, Any] = {}
                    for key in keys:
                        sample.update(expect(key, f[key].dtype, f[key][row], strings))
                    samples.append(sample)
            elif layout == "members":
                for name in sorted(f, key=natural_key):
                    node = f[name]
                    if b"DIMENSION_SCALE" in bytes(node.attrs.get("CLASS", b"")):
                        continue
                    sample = expect("data", node.dtype, node[()], strings)
                    samples.append({**sample, "attrs": attrs_of(f, node)})
            else:
                data = f[config["group"]]
                for name in sorted(data, key=natural_key):
                    group = data[name]
                    length = group[config["keys"][0]].shape[0]
                    window, stride = config.get("window", 0), config.get("stride", 1)
                    starts = range(0, length - window + 1, stride) if window else [0]
                    for start in starts:
                        sample = {}
                        for key in config["keys"]:
                            rows = group[key][start : start + window] if window else group[key][()]
                            sample.update(expect(key, group[key].dtype, rows, strings))
                        samples.append({**sample, "attrs": attrs_of(f, group)})
    return samples


def expect(name: str, dtype: np.dtype[Any], value: Any, strings: str) -> dict[str, Any]:
    if dtype.names:
        fields: dict[str, Any] = {}
        for field in dtype.names:
            fields.update(expect(f"{name}.{field}", dtype[field].base, value[field], strings))
        return fields
    if h5py.check_string_dtype(dtype) is not None:
        return {name: text(value, strings)}
    if h5py.check_vlen_dtype(dtype) is not None:
        return {name: ragged(value)}
    return {name: np.asarray(value)}


def text(value: Any, strings: str) -> Any:
    if isinstance(value, np.ndarray):
        return [text(item, strings) for item in value]
    raw = bytes(value) if isinstance(value, bytes | np.bytes_) else str(value).encode()
    return raw if strings == "bytes" else raw.decode()


def ragged(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [ragged(item) for item in value]
    return np.asarray(value)


def attrs_of(f: h5py.File, node: h5py.HLObject) -> dict[str, Any]:
    """Attribute names, and references turned into the paths they point to."""

    def resolve(value: Any) -> Any:
        if isinstance(value, h5py.Reference):
            return f[value].name
        if isinstance(value, np.ndarray) and value.dtype == object:
            return [resolve(item) for item in value]
        return value

    return {name: resolve(value) for name, value in node.attrs.items()}


def same(got: Any, want: Any, where: str) -> None:
    if isinstance(want, str | bytes):
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r}"
        for position, (item, wanted) in enumerate(zip(got, want, strict=True)):
            same(item, wanted, f"{where}[{position}]")
    else:
        assert isinstance(got, torch.Tensor), f"{where}: {type(got)}"
        array = got.numpy()
        native = want.dtype.newbyteorder("=")
        assert array.dtype == native and array.shape == want.shape, f"{where}: {array.dtype}"
        assert array.tobytes() == want.astype(native).tobytes(), f"{where}: {array} != {want}"


def same_sample(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert set(got) == set(want), f"{where}: {sorted(got)} != {sorted(want)}"
    for name, value in want.items():
        if name == "attrs":
            check_attrs(got["attrs"], value, where)
        else:
            same(got[name], value, f"{where} {name}")


def check_attrs(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert set(got) == set(want), where
    pickle.dumps(got)  # a worker sends them back
    for name, value in want.items():
        if isinstance(value, list | str):
            assert got[name] == value, f"{where} attrs {name}"
        else:
            assert np.array_equal(np.asarray(got[name]), np.asarray(value)), f"{where} {name}"


# -- the read paths ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_sample_equals_h5py_through_every_read_path(
    written: dict[str, list[Path]], name: str
) -> None:
    config = CONFIGS[name]
    ds = open_dataset(written, config)
    want = expected_samples(written[config["kind"]], config)
    assert len(ds) == len(want) > 0

    for index, wanted in enumerate(want):
        same_sample(ds[index], wanted, f"{name} ds[{index}]")

    picks = [*range(len(ds)), 0, len(ds) - 1]
    random.Random(7).shuffle(picks)
    for index, sample in zip(picks, ds.__getitems__(picks), strict=True):
        same_sample(sample, want[index], f"{name} __getitems__ {index}")

    layout = config.get("layout", "rows")
    if layout == "rows" or (layout == "groups" and config.get("window")):
        check_batch(ds, want, picks, name)
        loader = Loader(ds, 4, seed=3, num_threads=2)
        for batch, indices in zip(loader, loader.batches(), strict=True):
            check_batch_rows(batch, want, indices.tolist(), f"{name} Loader")

    loader = DataLoader(
        ds,
        batch_size=4,
        num_workers=2,
        collate_fn=list,
        multiprocessing_context="fork",
        timeout=120,
    )
    served = [sample for batch in loader for sample in batch]
    assert len(served) == len(want)
    for index, sample in enumerate(served):
        same_sample(sample, want[index], f"{name} DataLoader {index}")


def check_batch(
    ds: PooledH5Dataset, want: list[dict[str, Any]], picks: list[int], name: str
) -> None:
    check_batch_rows(ds.read_batch(picks), want, picks, f"{name} read_batch")


def check_batch_rows(
    batch: dict[str, Any], want: list[dict[str, Any]], picks: list[int], name: str
) -> None:
    for position, index in enumerate(picks):
        row = {key: value[position] for key, value in batch.items()}
        if "attrs" in row:
            row["attrs"] = batch["attrs"][position]
        same_sample(row, want[index], f"{name} {index}")


def test_whole_demonstrations_of_unequal_lengths_do_not_stack(
    written: dict[str, list[Path]],
) -> None:
    ds = open_dataset(written, CONFIGS["demonstrations whole"])
    with pytest.raises(LayoutError, match="window"):
        ds.read_batch(range(len(ds)))


def test_what_cannot_be_rows_is_a_corpus_error_naming_the_file(
    written: dict[str, list[Path]], tmp_path: Path
) -> None:
    sparse = written["anndata_sparse"][0]
    with pytest.raises(MissingKeyError, match=r"anndata_sparse_0\.h5ad") as raised:
        PooledH5Dataset(sparse.parent, ["X", "obs/score"])
    assert isinstance(raised.value, CorpusError)

    # netCDF pads a variable written only part of the way along its unlimited
    # dimension; HDF5, and so h5pool, sees it shorter.
    import netCDF4  # only here and in writers.py: see writers.write_all

    path = tmp_path / "partial.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        full, partial = (nc.createVariable(v, "f4", ("time",)) for v in ("full", "partial"))
        full[:4] = np.arange(4)
        partial[:2] = np.arange(2)
    with pytest.raises(LayoutError, match=r"partial\.nc.*fill value"):
        PooledH5Dataset(path, ["full", "partial"])


@pytest.mark.slow
def test_info_on_the_writers_files_is_clean_where_the_dataset_builds(
    written: dict[str, list[Path]],
) -> None:
    """The command line loads hdf5plugin itself: pandas' Blosc tables are not damaged."""
    # Pools of the datasets above, awaiting collection, still hold these files.
    # Opened again by a new pool after the whole suite had run (not in smaller
    # runs), libhdf5 failed to read the netCDF4 vlen string's creation
    # properties ("Expected global heap object size does not match"): not
    # understood yet, and left out of this test's subject.
    gc.collect()
    for name in ("pandas table", "netcdf4 rows", "anndata"):
        config = CONFIGS[name]
        folder = str(written[config["kind"]][0].parent)
        result = subprocess.run(
            [sys.executable, "-m", "h5pool", "info", folder, "--key", *config["keys"]],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0 and "bad files: none" in result.stdout, result
        samples = len(open_dataset(written, config))
        assert f"{samples:,}" in result.stdout.split("samples along axis 0")[1].splitlines()[0]

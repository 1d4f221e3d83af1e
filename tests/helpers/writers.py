"""Fixture files written by the real writers people's corpora come from.

netCDF4 (the netCDF-C library), h5netcdf, pandas through PyTables, anndata,
hdf5plugin filters and a robomimic-style writer with per-step strings and
records.  Every value encodes its file number and row, so a test checks
content; each writer makes one file of a corpus whose files differ in length.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anndata
import h5netcdf
import h5py
import hdf5plugin
import numpy as np
import pandas as pd

#: Writes file ``number`` of a corpus at ``path``.
Writer = Callable[[Path, int], None]


def rows_of(number: int) -> int:
    """Unequal lengths, so samples cross files at different places."""
    return 4 + 3 * number


def write_netcdf4(path: Path, number: int) -> None:
    """netCDF-C: an unlimited dimension, a zlib variable, vlen strings, fill values."""
    import netCDF4  # after the hdf5plugin files: see write_all

    with netCDF4.Dataset(path, "w") as nc:
        nc.title = f"file {number}"
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        temp = nc.createVariable("temp", "f4", ("time", "x"), zlib=True, chunksizes=(4, 3))
        station = nc.createVariable("station", str, ("time",))
        count = nc.createVariable("count", "i2", ("time",), fill_value=-1)
        for row in range(rows_of(number)):
            time[row] = 1000 * number + row
            temp[row] = np.arange(3) + 1000 * number + 10 * row
            station[row] = f"stätion {number}-{row}"
            count[row] = np.ma.masked if row % 3 == 0 else 100 * number + row


def write_h5netcdf(path: Path, number: int) -> None:
    """h5netcdf (netCDF4 through h5py): gzip variables and a UTF-8 string variable."""
    rows = rows_of(number)
    with h5netcdf.File(path, "w") as nc:
        nc.dimensions = {"time": rows, "y": 2}
        nc.create_variable("time", ("time",), "f8", data=np.arange(rows) + 1000.0 * number)
        wind = nc.create_variable(
            "wind",
            ("time", "y"),
            "f4",
            data=np.arange(2 * rows, dtype="f4").reshape(rows, 2) + 1000 * number,
            compression="gzip",
        )
        wind.attrs["units"] = "m/s"
        names = np.array([f"名前 {number}-{row}" for row in range(rows)], dtype=object)
        nc.create_variable("name", ("time",), h5py.string_dtype(), data=names)


def _frame(number: int) -> pd.DataFrame:
    rows = rows_of(number)
    return pd.DataFrame(
        {
            "code": np.arange(rows) + 1000 * number,
            "half": (np.arange(rows) + 1000 * number) / 2,
            "tag": [f"t{number}-{row}" for row in range(rows)],
        },
        index=np.arange(rows) + 100 * number,
    )


def write_pandas_table(path: Path, number: int) -> None:
    """``DataFrame.to_hdf(format="table")``: one compound dataset of blocks, blosc."""
    _frame(number).to_hdf(path, key="frame", format="table", complib="blosc", complevel=5)


def write_pandas_fixed(path: Path, number: int) -> None:
    """``DataFrame.to_hdf(format="fixed")``: one 2-D dataset per dtype block."""
    _frame(number).to_hdf(path, key="frame", format="fixed")


def write_anndata(path: Path, number: int, sparse: bool = False) -> None:
    """``AnnData.write_h5ad``: X, a categorical and a string index in ``obs``."""
    import scipy.sparse

    rows = rows_of(number)
    dense = (np.arange(rows * 3, dtype="f4").reshape(rows, 3) + 1000 * number) % 7
    obs = pd.DataFrame(
        {
            "cell": pd.Categorical([("b", "t", "nk")[row % 3] for row in range(rows)]),
            "score": np.arange(rows) + 1000.0 * number,
        },
        index=[f"cell-{number}-{row}" for row in range(rows)],
    )
    matrix = scipy.sparse.csr_matrix(dense) if sparse else dense
    anndata.AnnData(X=matrix, obs=obs).write_h5ad(path, compression="gzip")


def write_hdf5plugin(path: Path, number: int) -> None:
    """Filters only hdf5plugin provides: Zstd, Blosc(LZ4 + bit-shuffle), Bitshuffle."""
    rows = rows_of(number)
    codes = np.arange(rows) + 1000 * number
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "zstd",
            data=np.repeat(codes[:, None], 5, 1).astype("i4"),
            chunks=(2, 5),
            **hdf5plugin.Zstd(),
        )
        f.create_dataset(
            "blosc",
            data=codes.astype(">f8") / 3,
            chunks=(3,),
            **hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.BITSHUFFLE),
        )
        f.create_dataset(
            "bitshuffle",
            data=(codes[:, None] * np.ones((1, 4))).astype("u2"),
            chunks=(4, 4),
            **hdf5plugin.Bitshuffle(),
        )


#: A record per step, as trajectory writers store robot state next to images.
STATE = np.dtype([("step", "<i4"), ("gripper", "<f4"), ("joint", "<f4", (2,))])


def write_demonstrations(path: Path, number: int) -> None:
    """robomimic-style groups, each with an instruction string and a state record per step."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for demo in range(2 + number % 2):
            length = 4 + (number + 2 * demo) % 5
            group = data.create_group(f"demo_{demo}")
            codes = 10_000 * number + 100 * demo + np.arange(length)
            group["actions"] = np.repeat(codes[:, None], 3, 1).astype("f4")
            image = (codes % 251).astype("u1")[:, None, None] * np.ones((1, 4, 4), "u1")
            group.create_group("obs").create_dataset(
                "image", data=image, chunks=(1, 4, 4), compression="gzip"
            )
            group.create_dataset(
                "say", data=[f"step {c}" for c in codes], dtype=h5py.string_dtype()
            )
            state = np.zeros(length, STATE)
            state["step"] = codes
            state["gripper"] = codes / 4
            state["joint"] = codes[:, None] % 9
            group["state"] = state
            group.attrs["num_samples"] = length
            group.attrs["model_file"] = f"<mujoco {number}-{demo}/>"


def write_all(folder: str | os.PathLike[str], files: int) -> dict[str, list[Path]]:
    """Every writer's files, each in a folder of its own, by kind.

    hdf5plugin's files come first: importing netCDF4 loads the netCDF-C
    library's own HDF5 plugins, after which h5py can no longer *write* Blosc
    through hdf5plugin ("error during user callback"; reading still works).
    """
    writers: dict[str, tuple[str, Writer]] = {
        "hdf5plugin": ("plugins_{}.h5", write_hdf5plugin),
        "netcdf4": ("netcdf4_{}.nc", write_netcdf4),
        "h5netcdf": ("h5netcdf_{}.nc", write_h5netcdf),
        "pandas_table": ("pandas_table_{}.h5", write_pandas_table),
        "pandas_fixed": ("pandas_fixed_{}.h5", write_pandas_fixed),
        "anndata": ("anndata_dense_{}.h5ad", write_anndata),
        "anndata_sparse": (
            "anndata_sparse_{}.h5ad",
            lambda path, number: write_anndata(path, number, sparse=True),
        ),
        "demonstrations": ("demos_{}.hdf5", write_demonstrations),
    }
    written = {}
    for kind, (name, writer) in writers.items():
        where = Path(folder) / kind
        where.mkdir(parents=True, exist_ok=True)
        written[kind] = [where / name.format(number) for number in range(files)]
        for number, path in enumerate(written[kind]):
            writer(path, number)
    return written

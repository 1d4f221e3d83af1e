"""Strings, ragged rows and compound rows: the same types from every read path,
equal to what h5py reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from h5pool import PooledH5Dataset, collate_ragged, pad_ragged

KEYS = ["fixed", "utf8", "ragged", "record", "opaque", "label"]
RECORD = np.dtype([("id", "<i4"), ("score", ">f8"), ("pair", "u1", (2,))])


def write_values_file(path: Path, number: int, rows: int = 5) -> None:
    with h5py.File(path, "w") as f:
        f["fixed"] = np.array(
            [f"f{number}r{r}".encode().ljust(3, b"x") for r in range(rows)], "S16"
        )
        f.create_dataset(
            "utf8", data=[f"wörd {number}-{r}" for r in range(rows)], dtype=h5py.string_dtype()
        )
        ragged = f.create_dataset("ragged", (rows,), dtype=h5py.vlen_dtype("f4"))
        for r in range(rows):
            ragged[r] = np.arange(r + 1, dtype="f4") + 100 * number
        records = np.zeros(rows, RECORD)
        records["id"] = np.arange(rows) + 10 * number
        records["score"] = records["id"] / 2
        records["pair"] = records["id"][:, None] % 7
        f.create_dataset("record", data=records, chunks=(2,), compression="gzip")
        f["opaque"] = np.array([np.void(bytes([number, r, 0, 255, 7])) for r in range(rows)])
        f["label"] = np.arange(rows) + 1000 * number


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / f"v{number}.h5" for number in range(3)]
    for number, path in enumerate(paths):
        write_values_file(path, number)
    return paths


def expected(files: list[Path], index: int) -> dict[str, Any]:
    with h5py.File(files[index // 5]) as f:
        row = index % 5
        record = f["record"][row]
        return {
            "fixed": f["fixed"][row].decode(),
            "utf8": f["utf8"].asstr()[row],
            "ragged": f["ragged"][row],
            "record.id": record["id"],
            "record.score": record["score"],
            "record.pair": record["pair"],
            "opaque": np.frombuffer(f["opaque"][row].tobytes(), np.uint8),
            "label": f["label"][row],
        }


def check(sample: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(sample) == set(want)
    for name, value in want.items():
        got = sample[name]
        if isinstance(value, str):
            assert isinstance(got, str) and got == value, name
        else:
            assert isinstance(got, torch.Tensor), name
            assert np.array_equal(got.numpy(), np.asarray(value).astype(got.numpy().dtype)), name
            assert got.numpy().dtype == np.asarray(value).dtype.newbyteorder("="), name


def test_every_path_gives_the_same_types_as_h5py(files: list[Path]) -> None:
    ds = PooledH5Dataset(files, KEYS)
    picks = [14, 0, 7, 7]
    for index in range(len(ds)):
        check(ds[index], expected(files, index))
    for sample, index in zip(ds.__getitems__(picks), picks, strict=True):
        check(sample, expected(files, index))
    batch = ds.read_batch(picks)
    assert isinstance(batch["utf8"], list) and isinstance(batch["ragged"], list)
    assert batch["record.id"].shape == (4,) and batch["record.pair"].shape == (4, 2)
    for position, index in enumerate(picks):
        check({name: column[position] for name, column in batch.items()}, expected(files, index))


def test_strings_as_bytes_keep_their_bytes(files: list[Path]) -> None:
    ds = PooledH5Dataset(files, ["fixed", "utf8"], strings="bytes")
    assert ds[6]["fixed"] == b"f1r1" and ds[6]["utf8"] == "wörd 1-1".encode()
    assert ds.read_batch([6])["fixed"] == [b"f1r1"]


def test_ragged_rows_through_dataloader_workers_padded(files: list[Path]) -> None:
    ds = PooledH5Dataset(files, ["ragged", "label", "utf8"])
    loader = DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=collate_ragged, multiprocessing_context="fork"
    )
    seen = 0
    for batch in loader:
        lengths = batch.get("ragged.lengths")
        labels = batch["label"].tolist()
        assert batch["utf8"] == [f"wörd {lab // 1000}-{lab % 1000}" for lab in labels]
        for position, label in enumerate(labels):
            row = label % 1000
            length = int(lengths[position]) if lengths is not None else row + 1
            assert length == row + 1
            want = np.arange(row + 1, dtype="f4") + 100 * (label // 1000)
            assert np.array_equal(batch["ragged"][position, :length].numpy(), want)
        seen += len(labels)
    assert seen == len(ds)
    padded, lengths = pad_ragged([torch.ones(1), torch.ones(3)], value=-1.0)
    assert padded.tolist() == [[1.0, -1.0, -1.0], [1.0, 1.0, 1.0]] and lengths.tolist() == [1, 3]


def test_default_collate_takes_records_opaque_rows_and_strings(files: list[Path]) -> None:
    ds = PooledH5Dataset(files, ["record", "opaque", "fixed"])
    batch = default_collate([ds[index] for index in (0, 6, 14)])
    assert batch["opaque"].dtype == torch.uint8 and batch["opaque"].shape == (3, 5)
    assert batch["opaque"][:, :2].tolist() == [[0, 0], [1, 1], [2, 4]]
    assert batch["record.id"].tolist() == [0, 11, 24] and batch["fixed"][1] == "f1r1"

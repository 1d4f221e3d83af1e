from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5pool import (
    CorpusError,
    FileChangedError,
    LayoutError,
    MissingFileError,
    MissingKeyError,
    NoFilesFoundError,
    PooledH5Dataset,
    ReadError,
    UnreadableFileError,
)
from helpers.corpus import decode_sample, encoded, write_rows_file


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.h5"
    with pytest.raises(MissingFileError, match=r"absent\.h5") as info:
        PooledH5Dataset(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CorpusError)


def test_directory_without_hdf5(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(NoFilesFoundError, match=str(tmp_path)):
        PooledH5Dataset(tmp_path)


def test_glob_without_match(tmp_path: Path) -> None:
    with pytest.raises(NoFilesFoundError, match="glob pattern matched no files"):
        PooledH5Dataset(str(tmp_path / "*.h5"))


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"this is plain text, not HDF5\n" * 20, "not an HDF5 file"), (b"", "empty")],
)
def test_unreadable_files(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(content)
    with pytest.raises(UnreadableFileError, match=reason) as info:
        PooledH5Dataset(bad)
    assert str(bad) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, OSError)  # HDF5's own message is kept


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.h5"
    write_rows_file(path, 0, rows=200, width=64)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(UnreadableFileError, match="truncated") as info:
        PooledH5Dataset(path)
    assert str(path) in str(info.value)
    assert "eof" in str(info.value.__cause__).lower()


def test_missing_key(small_corpus: list[str]) -> None:
    with pytest.raises(MissingKeyError, match="'nope'") as info:
        PooledH5Dataset(small_corpus, ["data", "nope"])
    assert small_corpus[0] in str(info.value)
    assert isinstance(info.value, KeyError)


def test_missing_group_for_members(small_corpus: list[str]) -> None:
    with pytest.raises(MissingKeyError, match="no group 'runs'"):
        PooledH5Dataset(small_corpus, layout="members", group="runs")


def test_unequal_lengths(tmp_path: Path) -> None:
    path = tmp_path / "uneven.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((10, 2))
        f["label"] = np.zeros(9)
    with pytest.raises(LayoutError, match=r"unequal lengths.*'data': 10.*'label': 9") as info:
        PooledH5Dataset(path, ["data", "label"])
    assert str(path) in str(info.value)


def test_scalar_dataset_in_rows_layout(tmp_path: Path) -> None:
    path = tmp_path / "scalar.h5"
    with h5py.File(path, "w") as f:
        f["data"] = 3.0
    with pytest.raises(LayoutError, match="scalar"):
        PooledH5Dataset(path)


def test_deleted_after_indexing(small_corpus: list[str]) -> None:
    ds = PooledH5Dataset(small_corpus, ["data", "label"])
    os.remove(small_corpus[3])
    with pytest.raises(MissingFileError, match="no longer exists") as info:
        ds[35]
    assert small_corpus[3] in str(info.value) and "sample 35" in str(info.value)
    assert decode_sample(ds[45]) == (4, 5)


def test_replaced_after_indexing(small_corpus: list[str], tmp_path: Path) -> None:
    ds = PooledH5Dataset(small_corpus, ["data", "label"])
    replacement = tmp_path / "other.h5"
    write_rows_file(replacement, 77, rows=12, width=4)
    shutil.move(replacement, small_corpus[2])
    with pytest.raises(FileChangedError, match="changed since it was indexed") as info:
        ds[21]
    assert small_corpus[2] in str(info.value) and "sample 21" in str(info.value)
    with pytest.raises(FileChangedError):
        ds.__getitems__([0, 22])


def test_truncated_while_open_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "shrinking.h5"
    write_rows_file(path, 0, rows=100, width=256)
    ds = PooledH5Dataset(path, ["data", "label"])
    assert decode_sample(ds[99]) == (0, 99)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 4)
    with pytest.raises(ReadError, match="short read") as info:
        ds[98]
    message = str(info.value)
    assert str(path) in message and "'data'" in message and "sample 98" in message


def test_skip_bad_files_and_keep_the_rest(
    small_corpus: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = os.path.dirname(small_corpus[0])
    bad = os.path.join(directory, "shard_00002.h5")
    with open(bad, "wb") as f:
        f.write(b"garbage" * 100)
    empty = os.path.join(directory, "shard_00003_empty.h5")
    open(empty, "wb").close()
    with caplog.at_level(logging.WARNING, logger="h5pool"):
        ds = PooledH5Dataset(directory, ["data", "label"], on_error="skip")
    assert [path for path, _ in ds.skipped] == [bad, empty]
    assert "not an HDF5 file" in ds.skipped[0][1] and "empty" in ds.skipped[1][1]
    assert sum(bad in r.getMessage() for r in caplog.records) == 1
    assert len(ds) == 40
    seen = [decode_sample(ds[i]) for i in range(len(ds))]
    assert sorted({f for f, _ in seen}) == [0, 1, 3, 4]


def test_one_bad_file_does_not_disturb_the_others(small_corpus: list[str]) -> None:
    ds = PooledH5Dataset(small_corpus, ["data", "label"], max_open=8)
    for i in (0, 15, 45):
        ds[i]
    handles_before = {path: entry.raw_fd() for path, entry in ds.pool._handles.items()}
    os.remove(small_corpus[2])
    with pytest.raises(MissingFileError):
        ds[25]
    assert decode_sample(ds[1]) == (0, 1) and decode_sample(ds[46]) == (4, 6)
    handles_after = {path: entry.raw_fd() for path, entry in ds.pool._handles.items()}
    assert handles_after == handles_before
    # three reads and one failed attempt at the deleted file; indexing opened
    # its five files through a pool of its own, counted apart
    assert ds.pool.stats().misses == 3 + 1
    assert ds.index_stats.hdf5_opens == 5 and ds.index_stats.files_scanned == 5


def test_error_names_key_and_index_on_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.h5"
    write_rows_file(path, 5, rows=3, width=2)
    ds = PooledH5Dataset(path, "data")
    assert float(ds[2]["data"][0]) == encoded(5, 2)
    with pytest.raises(IndexError, match="index 3 out of range for 3 samples"):
        ds[3]

"""Damaged and odd files: a clear CorpusError naming the file, never a hang,
a bare exception or an allocation the file cannot back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5pool import (
    MissingKeyError,
    PooledH5Dataset,
    UnreadableFileError,
)
from helpers.corpus import make_corpus
from helpers.damaged import write_damaged_datatype

KEYS = ["data", "label"]


def constructed_within(seconds: float, *args: object, **kwargs: object) -> object:
    """Build the dataset in a thread: a hang fails the test instead of blocking it."""
    outcome: list[object] = []

    def build() -> None:
        try:
            outcome.append(PooledH5Dataset(*args, **kwargs))  # type: ignore[arg-type]
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"construction still running after {seconds} s"
    return outcome[0]


def test_a_fifo_is_skipped_in_a_folder_and_refused_by_name(tmp_path: Path) -> None:
    make_corpus(tmp_path, files=2, rows=3)
    fifo = tmp_path / "shard_00001_pipe.h5"
    os.mkfifo(fifo)
    for on_error in ("skip", "raise"):  # found by a folder listing: left out either way
        ds = constructed_within(120, tmp_path, KEYS, on_error=on_error)
        assert isinstance(ds, PooledH5Dataset) and len(ds) == 6
        assert [(p, "FIFO" in why) for p, why in ds.skipped] == [(str(fifo), True)]
    named = constructed_within(120, [fifo], KEYS, on_error="skip")
    assert isinstance(named, UnreadableFileError) and "not a regular file" in str(named)


def test_rows_larger_than_their_file_are_refused_before_allocation(tmp_path: Path) -> None:
    """A tiny file whose rows claim 32 GiB each: refused at construction, for
    contiguous (never written) and uncompressed chunked storage alike."""
    for name, chunks in (("contiguous.h5", None), ("chunked.h5", (1, 2**20))):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            f.create_dataset("data", shape=(2, 2**32), dtype="u8", chunks=chunks)
            f.create_dataset("label", data=np.arange(2))
        with pytest.raises(UnreadableFileError, match="cannot be stored uncompressed") as raised:
            PooledH5Dataset(path, KEYS)
        assert raised.value.path == str(path)


def test_a_member_larger_than_its_file_is_refused_before_allocation(tmp_path: Path) -> None:
    path = tmp_path / "members.h5"
    with h5py.File(path, "w") as f:
        f.create_group("runs").create_dataset("huge", shape=(2**32, 8), dtype="f8")
    ds = PooledH5Dataset(path, layout="members", group="runs")
    with pytest.raises(UnreadableFileError, match="member 'runs/huge' of 274,877,906,944 bytes"):
        ds[0]


def test_contiguous_rows_past_the_end_of_a_truncated_file(tmp_path: Path) -> None:
    path = make_corpus(tmp_path, files=1, rows=4000, width=8)[0]
    with open(path, "r+b") as f:  # HDF5's superblock records the end; only data is cut
        f.truncate(os.path.getsize(path) - 40_000)
    with pytest.raises(UnreadableFileError) as raised:
        PooledH5Dataset(path, KEYS)
    assert raised.value.path == os.path.realpath(path)


def test_a_checksum_failure_is_not_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "latest.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("data", data=np.arange(40.0).reshape(10, 4))
        f.create_dataset("label", data=np.arange(10))
    with h5py.File(path) as f:
        header = h5py.h5o.get_info(f["data"].id).addr
    damaged = bytearray(path.read_bytes())
    damaged[header + 12] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(UnreadableFileError, match="checksum failed") as raised:
        PooledH5Dataset(path, KEYS)
    assert not isinstance(raised.value, MissingKeyError)
    assert raised.value.__cause__ is not None
    with pytest.raises(MissingKeyError, match="no dataset 'nothing'"):
        PooledH5Dataset(path, ["label", "nothing"])


def test_a_locking_failure_suggests_turning_locking_off(tmp_path: Path) -> None:
    """A real lock conflict: another process holds the file open for writing."""
    path = make_corpus(tmp_path, files=1, rows=3)[0]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, h5py
                f = h5py.File({path!r}, "a")
                print("open", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(UnreadableFileError, match="locking") as raised:
            PooledH5Dataset(path, KEYS, file_kwargs={"locking": True})
        assert "HDF5_USE_FILE_LOCKING=FALSE" in str(raised.value)
    finally:
        holder.communicate("", timeout=60)


def test_a_missing_filter_plugin_is_named_with_the_fix(tmp_path: Path) -> None:
    """Written with hdf5plugin's bitshuffle, read by a process that never imported it."""
    hdf5plugin = pytest.importorskip("hdf5plugin")
    path = tmp_path / "bitshuffle.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.arange(64.0).reshape(16, 4), **hdf5plugin.Bitshuffle())
        f.create_dataset("label", data=np.arange(16))
    script = textwrap.dedent(
        f"""
        import sys
        from h5pool import PooledH5Dataset, UnreadableFileError
        try:
            PooledH5Dataset({str(path)!r}, ["data", "label"])
        except UnreadableFileError as exc:
            print(exc)
            sys.exit(0)
        sys.exit("read without the plugin")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "filter 32008 (bitshuffle)" in result.stdout
    assert "pip install hdf5plugin" in result.stdout and "import hdf5plugin" in result.stdout


def test_a_damaged_datatype_is_an_unreadable_file_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "damaged.h5"
    write_damaged_datatype(path)
    with pytest.raises(UnreadableFileError, match="'data' has a datatype") as raised:
        PooledH5Dataset(path, KEYS)
    assert str(path) in str(raised.value) and isinstance(raised.value.__cause__, ValueError)
    members = PooledH5Dataset(path, layout="members")
    with pytest.raises(UnreadableFileError, match=r"sample 0: .*damaged.h5: '/data'"):
        members[0]
    assert int(members[1]["data"][9]) == 9  # the sound member still reads
    make_corpus(tmp_path / "corpus", files=2, rows=3)
    os.replace(path, tmp_path / "corpus" / "shard_00001_damaged.h5")
    ds = PooledH5Dataset(tmp_path / "corpus", KEYS, on_error="skip")
    assert len(ds) == 6 and [p.endswith("damaged.h5") for p, _ in ds.skipped] == [True]


def test_a_name_that_is_not_utf8_does_not_break_the_missing_key_message(tmp_path: Path) -> None:
    """Listing the file's datasets for the message met a name h5py gives as bytes."""
    path = tmp_path / "names.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("good", data=np.arange(3))
        space = h5py.h5s.create_simple((3,))
        h5py.h5d.create(f.id, b"bad\xff\xfe", h5py.h5t.NATIVE_INT32, space)
    with pytest.raises(MissingKeyError, match=r"no dataset 'data'.*datasets: .*bad.*good"):
        PooledH5Dataset(path, "data")
    make_corpus(tmp_path / "corpus", files=2, rows=3)
    os.replace(path, tmp_path / "corpus" / "shard_00001_names.h5")
    ds = PooledH5Dataset(tmp_path / "corpus", KEYS, on_error="skip")
    assert len(ds) == 6 and len(ds.skipped) == 1

"""SWMR: a writer process appends rows while h5pool reads; refresh() takes them in."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from h5pool import Loader, PooledH5Dataset, UnreadableFileError
from helpers.corpus import encoded

pytestmark = pytest.mark.slow  # a writer process

WRITER = textwrap.dedent(
    """
    import sys, h5py, numpy as np
    path, number = sys.argv[1], int(sys.argv[2])
    def rows(start, stop):
        return np.arange(start, stop) + number * 1000
    with h5py.File(path, "w", libver="latest") as f:
        data = f.create_dataset("data", data=np.repeat(rows(0, 6)[:, None], 3, 1).astype("f4"),
                                maxshape=(None, 3), chunks=(4, 3), compression="gzip")
        label = f.create_dataset("label", data=rows(0, 6), maxshape=(None,), chunks=(4,))
        f.swmr_mode = True
        print("ready", flush=True)
        for line in sys.stdin:  # one line: append 5 rows
            size = data.shape[0]
            data.resize((size + 5, 3))
            data[size:] = np.repeat(rows(size, size + 5)[:, None], 3, 1)
            label.resize((size + 5,))
            label[size:] = rows(size, size + 5)
            data.flush()
            label.flush()
            print("appended", flush=True)
    """
)


def start_writer(path: Path, number: int) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(number)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    return writer


def append(writer: subprocess.Popen[str]) -> None:
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write("more\n")
    writer.stdin.flush()
    assert writer.stdout.readline().strip() == "appended"


def labels(ds: PooledH5Dataset) -> list[int]:
    return [int(ds[i]["label"]) for i in range(len(ds))]


def test_rows_stay_readable_while_appended_and_refresh_adds_them(tmp_path: Path) -> None:
    writers = [start_writer(tmp_path / f"live_{n}.h5", n) for n in range(2)]
    try:
        ds = PooledH5Dataset(tmp_path, ["data", "label"], file_kwargs={"swmr": True})
        assert labels(ds) == [encoded(f, r) for f in range(2) for r in range(6)]
        loader = Loader(ds, batch_size=4, num_threads=1)
        for writer in writers:
            append(writer)
        # Indexed rows still read while the files grow: growth is not a change.
        assert labels(ds) == [encoded(f, r) for f in range(2) for r in range(6)]
        assert sorted(int(v) for b in loader for v in b["label"]) == sorted(labels(ds))
        assert ds.refresh() == 10
        expected = [encoded(f, r) for f in range(2) for r in range(11)]
        assert labels(ds) == expected
        for i in (5, 6, 10, 21):
            assert bool((ds[i]["data"] == float(ds[i]["label"])).all())
        loader.set_epoch(1)  # the next epoch takes in the new rows, once each
        assert sorted(int(v) for b in loader for v in b["label"]) == sorted(expected)
        append(writers[0])
        assert ds.refresh() == 5 and len(ds) == 27
    finally:
        for writer in writers:
            writer.communicate("", timeout=60)


def test_without_swmr_the_open_file_and_refresh_are_refused_clearly(tmp_path: Path) -> None:
    writer = start_writer(tmp_path / "w.h5", 0)
    try:
        with pytest.raises(UnreadableFileError, match=r"file_kwargs=\{'swmr': True\}"):
            PooledH5Dataset(tmp_path / "w.h5", ["data", "label"])
    finally:
        writer.communicate("", timeout=60)
    ds = PooledH5Dataset(tmp_path / "w.h5", ["data", "label"])  # written and closed
    with pytest.raises(ValueError, match="swmr"):
        ds.refresh()


@pytest.mark.parametrize("how", ["pool closed", "evicted"])
def test_a_grown_file_reopens_without_a_change_error(tmp_path: Path, how: str) -> None:
    """Growth under SWMR is not a change, when the file is reopened as when its
    stamp is checked: after the pool is closed, and after an eviction."""
    writers = [start_writer(tmp_path / f"live_{n}.h5", n) for n in range(2)]
    try:
        ds = PooledH5Dataset(tmp_path, ["data", "label"], file_kwargs={"swmr": True}, max_open=1)
        indexed = [encoded(f, r) for f in range(2) for r in range(6)]
        assert labels(ds) == indexed
        for writer in writers:
            append(writer)
        if how == "pool closed":
            ds.pool.close()
            assert labels(ds) == indexed
        else:  # max_open=1: every switch between the two files evicts the other
            for _ in range(2):
                assert [int(ds[i]["label"]) for i in (0, 6, 1, 7, 11, 5)] == [
                    indexed[i] for i in (0, 6, 1, 7, 11, 5)
                ]
        batch = ds.read_batch([0, 6, 11, 5])
        assert [int(v) for v in batch["label"]] == [indexed[i] for i in (0, 6, 11, 5)]
        assert bool((batch["data"][:, 0] == batch["label"].float()).all())
        assert ds.refresh() == 10 and len(ds) == 22
    finally:
        for writer in writers:
            writer.communicate("", timeout=60)

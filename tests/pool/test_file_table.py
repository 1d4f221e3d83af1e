"""The file table: descriptors by file number, inside the pool's budget and lock.

What it must keep from the pool: ``max_open`` counts its descriptors with the
pool's, pins keep a file open while it is read, a forked child never reads
through its parent's descriptors, a lowered descriptor limit is survived, and
``pool.close()`` and a dropped engine leave nothing open.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from h5pool import HandlePool, PooledH5Dataset
from h5pool.pool.file_table import FileTable
from helpers.corpus import decode_sample, encoded, make_corpus, open_hdf5_descriptors
from helpers.processes import run_python

KEYS = ["data", "label"]


def labels(batch: dict[str, object]) -> list[int]:
    return [int(v) for v in batch["label"]]  # type: ignore[attr-defined]


def test_a_batch_over_more_files_than_max_open_stays_within_it(tmp_path: Path) -> None:
    make_corpus(tmp_path, files=20, rows=5, width=3)
    ds = PooledH5Dataset(tmp_path, KEYS, max_open=3)
    indices = np.random.default_rng(0).permutation(len(ds))
    for start in range(0, len(indices), 40):
        chosen = indices[start : start + 40]
        assert labels(ds.read_batch(chosen)) == [encoded(*divmod(int(i), 5)) for i in chosen]
    stats = ds.pool.stats()
    assert stats.peak_open_files <= 3 and stats.overflows == 0
    assert stats.evictions > 0 and stats.raw_opens == stats.misses
    assert len(ds.pool) <= 3 and open_hdf5_descriptors() <= 3


def test_table_and_hdf5_handles_share_one_budget(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path, files=6, rows=4, width=2)
    pool = HandlePool(max_open=4)
    ds = PooledH5Dataset(paths, KEYS, pool=pool)
    for path in paths[:3]:  # the pool's own HDF5 handles, by path
        with pool.open(path):
            pass
    ds.read_batch(np.arange(len(ds)))  # six files through the table
    stats = pool.stats()
    assert stats.open_descriptors <= 4 and stats.peak_open_files <= 4
    assert stats.open_files == len(pool) == len(pool.open_paths()) <= 4


def test_a_pinned_file_is_never_closed_under_a_reader(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path, files=8, rows=4, width=2)
    ds = PooledH5Dataset(paths, KEYS, max_open=2)
    engine = ds.engine
    table = engine.table
    assert table is not None
    fd = table.pin_one(0)
    try:
        ds.read_batch(np.arange(4, len(ds)))  # six other files, budget of two
        assert int(table.fds[0]) == fd and os.fstat(fd)
    finally:
        table.unpin_one(0)
    ds.read_batch(np.arange(4, len(ds)))
    assert ds.pool.stats().open_descriptors <= 2


def test_threads_reading_together_get_every_row(tmp_path: Path) -> None:
    make_corpus(tmp_path, files=30, rows=6, width=2)
    ds = PooledH5Dataset(tmp_path, KEYS, max_open=4)
    errors: list[BaseException] = []

    def read(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(40):
                chosen = rng.integers(0, len(ds), 16)
                assert labels(ds.read_batch(chosen)) == [
                    encoded(*divmod(int(i), 6)) for i in chosen
                ]
                index = int(rng.integers(0, len(ds)))
                assert decode_sample(ds[index]) == divmod(index, 6)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)  # a hang guard
    assert not errors, errors
    assert ds.pool.stats().open_descriptors <= 4


def test_close_and_a_dropped_engine_leave_nothing_open(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path, files=5, rows=4, width=2)
    ds = PooledH5Dataset(paths, KEYS, max_open=8)
    ds.read_batch(np.arange(len(ds)))
    assert open_hdf5_descriptors() == 5
    ds.pool.close()
    assert open_hdf5_descriptors() == 0 and ds.pool.stats().open_descriptors == 0
    ds.read_batch(np.arange(len(ds)))
    ds.reset_engine()
    assert open_hdf5_descriptors() == 0 and ds.pool.stats().open_descriptors == 0
    stamps = ds.engine._stamp_of
    ds.reset_engine()
    table = FileTable(ds.pool, ds.index.files, stamps)
    table.pin(np.array([0, 1]))
    table.unpin(np.array([0, 1]))
    del table  # dropped without close(): its descriptors are given back
    assert open_hdf5_descriptors() == 0
    ds.read_batch(np.arange(len(ds)))
    assert ds.pool.stats().open_descriptors == 5


def read_in_child(ds: PooledH5Dataset, answers: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        table = ds.engine.table
        assert table is not None
        inherited = int(table.open_count)
        rows = labels(ds.read_batch(np.arange(len(ds))))
        answers.put((inherited, rows, ds.pool.stats().fork_resets))
    except BaseException as exc:
        answers.put(repr(exc))


def test_a_forked_child_opens_its_own_descriptors(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path, files=4, rows=3, width=2)
    ds = PooledH5Dataset(paths, KEYS, max_open=8)
    ds.read_batch(np.arange(len(ds)))
    parent_table = ds.engine.table
    assert parent_table is not None and parent_table.open_count == 4
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=read_in_child, args=(ds, answers))
    child.start()
    answer = answers.get(timeout=120)
    child.join(120)
    assert isinstance(answer, tuple), answer
    inherited, rows, resets = answer
    assert inherited == 0 and resets == 1  # the table was reset when the child began
    assert rows == [encoded(f, r) for f in range(4) for r in range(3)]
    assert parent_table.open_count == 4  # the parent's descriptors are untouched
    assert labels(ds.read_batch([0, 11])) == [encoded(0, 0), encoded(3, 2)]


@pytest.mark.slow
def test_a_lowered_descriptor_limit_with_more_files_than_it(tmp_path: Path) -> None:
    """200 files, a soft limit of 40, the default max_open: clamped, never EMFILE."""
    make_corpus(tmp_path, files=200, rows=2, width=2)
    result = run_python(
        f"""
        import resource, numpy as np
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, hard))
        from h5pool import PooledH5Dataset
        from helpers.corpus import encoded
        ds = PooledH5Dataset({str(tmp_path)!r}, ["data", "label"], scan_processes=1)
        order = np.random.default_rng(0).permutation(len(ds))
        for start in range(0, len(order), 64):
            chosen = order[start : start + 64]
            got = [int(v) for v in ds.read_batch(chosen)["label"]]
            assert got == [encoded(*divmod(int(i), 2)) for i in chosen]
        for i in order[:100]:
            assert int(ds[int(i)]["label"]) == encoded(*divmod(int(i), 2))
        s = ds.pool.stats()
        assert s.peak_open_files <= ds.pool.max_open < 40, s
        print("ok", s.max_open)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_stamps_are_checked_at_most_once_per_stale_after(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path, files=2, rows=4, width=2)
    lazy = PooledH5Dataset(paths, KEYS, stale_after=3600)
    eager = PooledH5Dataset(paths, KEYS, stale_after=0)
    for ds in (lazy, eager):
        ds[0]
        table = ds.engine.table
        assert table is not None
        first = float(table.checked_at[0])
        assert first > 0  # checked when the file opened
        ds[1]
        ds.read_batch([0, 2, 5])
        later = float(table.checked_at[0])
        assert (later == first) == (ds is lazy)
    with pytest.raises(ValueError, match="stale_after"):
        PooledH5Dataset(paths, KEYS, stale_after=-1)

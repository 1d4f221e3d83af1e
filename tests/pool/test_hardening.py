"""Misuse that used to pass silently: float or string indices, double releases,
a cap above the descriptor limit, overflow log floods."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from h5pool import HandlePool, PooledH5Dataset, raise_fd_limit
from helpers.corpus import decode_sample, make_corpus
from helpers.paths import TESTS_DIR


def test_indices_must_be_integers(small_corpus: list[str]) -> None:
    ds = PooledH5Dataset(small_corpus, ["data", "label"])
    for bad in (1.9, "3", True, None):
        with pytest.raises(TypeError, match="must be integers"):
            ds[bad]  # type: ignore[index]
    with pytest.raises(TypeError, match="must be integers"):
        ds.read_batch(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="must be integers"):
        ds.__getitems__(["1"])  # type: ignore[list-item]
    assert decode_sample(ds[np.int32(12)]) == (1, 2)
    assert decode_sample(ds[torch.tensor(13)]) == (1, 3)
    assert ds.read_batch(np.array([3, 4], dtype=np.uint8))["label"].tolist() == [3, 4]


def test_a_second_release_raises(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=2)
    entry = pool.acquire(small_corpus[0])
    pool.release(entry)
    with pytest.raises(RuntimeError, match="released more often than acquired"):
        pool.release(entry)
    again = pool.acquire(small_corpus[0])
    assert again is entry and entry.pins == 1
    pool.release(again)


def test_overflow_is_logged_once_and_counted(
    small_corpus: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    pool = HandlePool(max_open=1)
    held = [pool.acquire(path) for path in small_corpus[:2]]
    with caplog.at_level(logging.WARNING, logger="h5pool"):
        for _ in range(3):
            for path in small_corpus[2:]:
                pool.release(pool.acquire(path))
    for entry in held:
        pool.release(entry)
    assert pool.stats().overflows >= 3
    assert sum("beyond max_open" in r.getMessage() for r in caplog.records) == 1


def run_under_limit(code: str, limit: int) -> subprocess.CompletedProcess[str]:
    program = textwrap.dedent(
        f"""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, hard))
        """
    ) + textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH=TESTS_DIR)
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300, env=env
    )


def test_max_open_is_clamped_below_the_descriptor_limit(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "c", files=3, rows=2, width=2)
    result = run_under_limit(
        f"""
        import logging
        logging.basicConfig(level=logging.WARNING)
        from h5pool import HandlePool
        pool = HandlePool(max_open=251)
        print("cap", pool.max_open)
        HandlePool(max_open=251)  # the same request warns once
        with pool.open({corpus[0]!r}):
            f = open({corpus[1]!r}, "rb")  # other opens of the process still work
            f.close()
        """,
        limit=256,
    )
    assert result.returncode == 0, result.stderr
    assert "cap 224" in result.stdout  # 256 less an eighth
    assert result.stderr.count("leaves no descriptors") == 1


def test_raise_fd_limit_raises_the_soft_limit_towards_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 300:
        pytest.skip("the hard limit leaves no room to test")
    result = run_under_limit(
        """
        import resource
        from h5pool import raise_fd_limit
        print("got", raise_fd_limit(300), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        print("same", raise_fd_limit(100))
        """,
        limit=256,
    )
    assert result.returncode == 0, result.stderr
    assert "got 300 300" in result.stdout and "same 300" in result.stdout
    assert callable(raise_fd_limit)


@pytest.mark.parametrize("stale_after", [0.0, 0.3])
def test_a_file_changed_under_an_open_handle_is_refused(tmp_path: Path, stale_after: float) -> None:
    """Rewritten or truncated under an open descriptor: refused within ``stale_after``
    seconds (0: at the next visit)."""
    import shutil
    import time

    import h5py

    from h5pool import FileChangedError

    def after_the_bound() -> None:
        time.sleep(stale_after * 1.2)  # the bound, not a timing assertion

    files = make_corpus(tmp_path / "c", files=2, rows=8, width=2)
    ds = PooledH5Dataset(files, ["data", "label"], max_open=4, stale_after=stale_after)
    assert decode_sample(ds[3]) == (0, 3)
    assert ds.read_batch([1, 9])["label"].tolist() == [1, 1001]
    # Rewrite file 0 in place (same inode, as `cp` does) while its handle is open.
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.full((8, 2), 7.0, "f4")
        f["label"] = np.full(8, 7)
    shutil.copyfile(other, files[0])
    after_the_bound()
    with pytest.raises(FileChangedError, match="changed since it was indexed") as info:
        ds.read_batch([2, 10])
    assert files[0] in str(info.value)
    assert decode_sample(ds[12]) == (1, 4)  # the other file still reads
    with pytest.raises(FileChangedError):
        ds[4]
    with open(files[1], "r+b") as f:  # truncate the second one
        f.truncate(1024)
    after_the_bound()
    with pytest.raises(FileChangedError):
        ds.read_batch([9])


def test_descriptor_advice_when_the_soft_limit_is_the_hard_one() -> None:
    """With soft == hard, `ulimit -n` at the same value would be no advice at all."""
    script = textwrap.dedent(
        """
        import resource
        from h5pool.pool.descriptors import descriptor_limit_error
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        print(descriptor_limit_error("/x.h5", 3))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft))
        print(descriptor_limit_error("/x.h5", 3))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    raised, capped = result.stdout.strip().splitlines()
    if "already the hard limit" not in raised:  # soft < hard at first: the usual advice
        assert "raise_fd_limit()" in raised
    assert "already the hard limit" in capped and "ulimit -n" not in capped

from __future__ import annotations

import os
import pickle
import random
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5pool import DescriptorLimitError, HandlePool, MissingKeyError, default_max_open
from h5pool.pool.handle_pool import DEFAULT_CHUNK_CACHE_BYTES
from helpers.corpus import encoded, open_hdf5_descriptors
from helpers.processes import run_python


def first_value(f: h5py.File) -> int:
    return int(f["label"][0])


def test_hits_misses_and_lru_eviction(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=2)
    for path in small_corpus[:2]:
        with pool.open(path) as f:
            assert first_value(f) == encoded(small_corpus.index(path), 0)
    with pool.open(small_corpus[0]):
        pass  # file 0 is now the most recently used
    with pool.open(small_corpus[2]):
        pass  # evicts file 1, the least recently used
    stats = pool.stats()
    assert (stats.hits, stats.misses, stats.evictions) == (1, 3, 1)
    assert stats.open_files == len(pool) == 2
    assert stats.peak_open_files == 2
    assert set(pool.open_paths()) == {os.path.realpath(p) for p in small_corpus[::2][:2]}


def test_two_spellings_of_one_file_share_a_handle(small_corpus: list[str], tmp_path: Path) -> None:
    link = tmp_path / "link.h5"
    link.symlink_to(small_corpus[0])
    relative = os.path.relpath(small_corpus[0])
    pool = HandlePool(max_open=4)
    with pool.open(small_corpus[0]) as a, pool.open(link) as b, pool.open(relative) as c:
        assert a is b is c
    assert len(pool) == 1
    assert pool.stats().misses == 1


def test_pinned_handle_is_never_evicted(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=1)
    with pool.open(small_corpus[0]) as pinned:
        with pool.open(small_corpus[1]) as other:
            # Both are open: the pool overflowed instead of closing a file in use.
            assert pinned.id.valid and other.id.valid
            assert first_value(other) == encoded(1, 0)
        assert pinned.id.valid
        assert first_value(pinned) == encoded(0, 0)
        assert pool.stats().overflows == 1
    # Back within the cap as soon as the pins are released.
    assert len(pool) == 1


def test_every_handle_pinned_does_not_deadlock_across_threads(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=2)
    barrier = threading.Barrier(len(small_corpus))
    results: dict[int, int] = {}

    def hold(number: int) -> None:
        with pool.open(small_corpus[number]) as f:
            barrier.wait(timeout=30)  # all five pinned at once, cap is two
            results[number] = first_value(f)

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(len(small_corpus))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {n: encoded(n, 0) for n in range(len(small_corpus))}
    assert pool.stats().peak_open_files == len(small_corpus)
    assert len(pool) == 2


def test_close_keeps_pool_usable_and_defers_pinned(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=4)
    with pool.open(small_corpus[1]):
        pass
    with pool.open(small_corpus[0]) as f:
        pool.close()
        assert f.id.valid  # pinned: closed only on release
        assert first_value(f) == encoded(0, 0)
    assert not f.id.valid
    assert len(pool) == 0
    with pool.open(small_corpus[0]) as again:
        assert first_value(again) == encoded(0, 0)


def test_context_manager_closes(small_corpus: list[str]) -> None:
    with HandlePool(max_open=3) as pool, pool.open(small_corpus[0]) as f:
        pass
    assert len(pool) == 0
    assert not f.id.valid


def test_dataset_objects_are_cached_per_handle(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=1)
    entry = pool.acquire(small_corpus[0])
    try:
        assert entry.dataset("data") is entry.dataset("data")
        with pytest.raises(MissingKeyError, match="nope"):
            entry.dataset("nope")
    finally:
        pool.release(entry)
    with pool.open(small_corpus[1]):
        pass
    assert entry._datasets == {}  # dropped with its evicted handle


def test_pickle_carries_configuration_only(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=3, file_kwargs={"rdcc_nbytes": 12345})
    with pool.open(small_corpus[0]):
        payload = pickle.dumps(pool)
    assert b"h5py" not in payload
    clone = pickle.loads(payload)
    assert len(clone) == 0
    assert clone.max_open == 3
    assert clone.file_kwargs["rdcc_nbytes"] == 12345
    with clone.open(small_corpus[0]) as f:
        assert first_value(f) == encoded(0, 0)


def test_default_cap_and_chunk_cache() -> None:
    assert default_max_open(1024) == 128
    assert default_max_open(256) == 64
    assert default_max_open(8) == 2
    assert default_max_open(1) == 1
    pool = HandlePool()
    assert 1 <= pool.max_open <= 128
    assert pool.file_kwargs["rdcc_nbytes"] == DEFAULT_CHUNK_CACHE_BYTES
    with pytest.raises(ValueError):
        HandlePool(max_open=0)


def test_threads_read_correct_values_with_small_pool(corpus_50: list[str]) -> None:
    pool = HandlePool(max_open=4)
    errors: list[BaseException] = []
    checked = [0] * 8

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(800):
                number = rng.randrange(len(corpus_50))
                row = rng.randrange(20)
                entry = pool.acquire(corpus_50[number])
                try:
                    value = int(entry.dataset("label")[row])
                    data = entry.dataset("data")[row]
                finally:
                    pool.release(entry)
                assert value == encoded(number, row), (number, row, value)
                assert np.all(data == encoded(number, row))
                checked[seed] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(checked) == 8 * 800
    stats = pool.stats()
    assert stats.hits + stats.misses == 8 * 800
    assert stats.open_files <= 4
    assert stats.peak_open_files <= 8  # at most one pin per thread beyond the cap


def test_fork_child_reopens_and_parent_keeps_working(small_corpus: list[str]) -> None:
    pool = HandlePool(max_open=8)
    parent_ids = {}
    for number, path in enumerate(small_corpus):
        with pool.open(path) as f:
            assert first_value(f) == encoded(number, 0)
            parent_ids[number] = f.id.id
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 1
        try:
            os.close(read_fd)
            assert len(pool) == 0  # cleared eagerly by the at-fork hook
            assert pool.stats().fork_resets == 1
            for number, path in enumerate(small_corpus):
                with pool.open(path) as f:
                    assert int(f["label"][3]) == encoded(number, 3)
                    assert np.all(f["data"][3] == encoded(number, 3))
            assert pool.stats().misses == len(small_corpus)
            status = 0
        except BaseException as exc:
            os.write(write_fd, repr(exc).encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    message = os.read(read_fd, 10000).decode()
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(status) == 0, message
    # The parent's handles survive the child's closing of its copies.
    assert len(pool) == len(small_corpus)
    for number, path in enumerate(small_corpus):
        with pool.open(path) as f:
            assert f.id.id == parent_ids[number]
            assert int(f["label"][9]) == encoded(number, 9)
    assert pool.stats().fork_resets == 0


def test_fork_reset_by_pid_without_hook(small_corpus: list[str]) -> None:
    """A pool whose hook did not run (e.g. an exotic fork) still resets by PID."""
    pool = HandlePool(max_open=8)
    with pool.open(small_corpus[0]):
        pass
    pool.pid = -1  # what a child whose at-fork hook never ran would see
    with pool.open(small_corpus[0]) as f:
        assert first_value(f) == encoded(0, 0)
    stats = pool.stats()
    assert stats.fork_resets == 1
    assert stats.misses == 1


def test_emfile_evicts_and_retries_under_real_limit(corpus_50: list[str]) -> None:
    corpus_dir = os.path.dirname(corpus_50[0])
    result = run_python(
        f"""
        import os, resource, glob
        from h5pool import HandlePool
        from helpers.corpus import encoded, open_hdf5_descriptors
        paths = sorted(glob.glob({corpus_dir!r} + "/*.h5"))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        pool = HandlePool(max_open=40)
        for n, p in enumerate(paths[:10]):
            with pool.open(p):
                pass
        hog = []
        try:
            while True:
                hog.append(open(os.devnull))
        except OSError:
            pass
        # Every descriptor is taken: each new open must evict an idle handle.
        for n, p in enumerate(paths[10:20], start=10):
            with pool.open(p) as f:
                assert int(f["label"][1]) == encoded(n, 1)
        s = pool.stats()
        assert s.emfile_retries == 10, s
        assert s.open_files == 10, s
        hog.pop().close()
        assert open_hdf5_descriptors() == 10
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_emfile_with_everything_pinned_says_which_limit(corpus_50: list[str]) -> None:
    corpus_dir = os.path.dirname(corpus_50[0])
    result = run_python(
        f"""
        import os, resource, glob
        from h5pool import HandlePool, DescriptorLimitError
        paths = sorted(glob.glob({corpus_dir!r} + "/*.h5"))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))
        pool = HandlePool(max_open=100)
        held = []
        try:
            for p in paths:
                held.append(pool.acquire(p))
        except DescriptorLimitError as exc:
            print("EMFILE", exc.errno, len(held), exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("EMFILE 24 ")
    assert "RLIMIT_NOFILE soft=48" in result.stdout
    assert "ulimit -n" in result.stdout and "max_open" in result.stdout


def test_descriptor_limit_error_is_an_oserror() -> None:
    exc = DescriptorLimitError("limit")
    assert isinstance(exc, OSError) and exc.errno == 24


def test_pool_holds_no_more_descriptors_than_cap(corpus_50: list[str]) -> None:
    before = open_hdf5_descriptors()
    pool = HandlePool(max_open=5)
    for path in corpus_50:
        with pool.open(path):
            pass
    assert open_hdf5_descriptors() - before == 5
    pool.close()
    assert open_hdf5_descriptors() == before

"""The index cache as a file on a shared cluster: unwritable folders, modes, other keys.

A cache is an optimisation: a folder that cannot be written costs one warning
and an uncached build, never the dataset.  A cache someone else built, in a
folder this user cannot write, loads as it is.  The read-only cases run in a
process of an unprivileged user when the tests run as root, since root writes
through any mode bits.
"""

from __future__ import annotations

import encodings.cp437  # noqa: F401 -- zipfile's, imported before the child drops rights
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from h5pool import PooledH5Dataset
from h5pool.index import obtain
from helpers.corpus import make_corpus

KEYS = ["data", "label"]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user can read (pytest's own are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="h5pool-shared-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_unprivileged(corpus: Path, cache: Path) -> tuple[list[int], list[str]]:
    """Build the dataset twice in a forked child that cannot write ``cache``'s
    folder: ``([samples, files scanned, last label], [warnings])``.

    Forked, not a new interpreter: the test's Python may sit where the
    unprivileged user cannot run it (pyenv under ``/root``).
    """
    if os.geteuid() != 0:
        cache.parent.chmod(0o555)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(reader)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)  # nobody
            warnings: list[str] = []
            handler = logging.Handler(logging.WARNING)
            handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
            logging.getLogger("h5pool").addHandler(handler)
            for _ in range(2):
                ds = PooledH5Dataset(corpus, KEYS, index_cache=cache)
            found = [len(ds), ds.index_stats.files_scanned, int(ds[len(ds) - 1]["label"])]
            os.write(writer, json.dumps([found, warnings]).encode())
        except BaseException as exc:
            os.write(writer, json.dumps([[], [f"{type(exc).__name__}: {exc}"]]).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answers:
        found, warnings = json.loads(answers.read() or b"[[], []]")
    os.waitpid(child, 0)
    return found, warnings


def make_shared_corpus(shared: Path) -> Path:
    corpus = shared / "corpus"
    corpus.mkdir()
    make_corpus(corpus, 4, rows=5)
    for path in (shared, *shared.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return corpus


def test_a_read_only_folder_warns_once_and_builds_uncached(shared: Path) -> None:
    corpus = make_shared_corpus(shared)
    caches = shared / "caches"
    caches.mkdir(mode=0o755)
    found, warnings = run_unprivileged(corpus, caches / "index.npz")
    assert found == [20, 4, 3004], warnings
    assert len(warnings) == 1, warnings
    assert str(caches / "index.npz") in warnings[0] and "cannot be written" in warnings[0]
    assert "without caching it" in warnings[0]
    assert not (caches / "index.npz").exists()


def test_a_read_only_cache_built_by_another_user_loads_silently(shared: Path) -> None:
    corpus = make_shared_corpus(shared)
    caches = shared / "caches"
    caches.mkdir(mode=0o755)
    PooledH5Dataset(corpus, KEYS, index_cache=caches / "index.npz")
    found, warnings = run_unprivileged(corpus, caches / "index.npz")
    assert found == [20, 0, 3004], warnings  # nothing scanned: the cache was read
    assert warnings == []  # no "building without a lock"


def test_a_missing_folder_warns_once_and_builds_uncached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_corpus(tmp_path / "corpus", 3, rows=4)
    cache = tmp_path / "no" / "such" / "folder" / "index.npz"
    obtain._WARNED.discard(os.path.abspath(cache))
    with caplog.at_level(logging.WARNING, logger="h5pool"):
        first = PooledH5Dataset(tmp_path / "corpus", KEYS, index_cache=cache)
        second = PooledH5Dataset(tmp_path / "corpus", KEYS, index_cache=cache)
    assert len(first) == len(second) == 12
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(cache) in warnings[0].getMessage()
    assert "does not exist" in warnings[0].getMessage()
    assert not cache.parent.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_the_cache_file_follows_the_umask(tmp_path: Path, umask: int) -> None:
    make_corpus(tmp_path / "corpus", 2, rows=3)
    cache = tmp_path / "index.npz"
    previous = os.umask(umask)
    try:
        PooledH5Dataset(tmp_path / "corpus", KEYS, index_cache=cache)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o666 & ~umask


def test_a_cache_of_other_keys_is_rebuilt_with_a_warning_naming_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_corpus(tmp_path / "corpus", 2, rows=3)
    cache = tmp_path / "index.npz"
    PooledH5Dataset(tmp_path / "corpus", ["data"], index_cache=cache)
    with caplog.at_level(logging.WARNING, logger="h5pool"):
        ds = PooledH5Dataset(tmp_path / "corpus", KEYS, index_cache=cache)
    assert ds.index_stats.files_scanned == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "['data']" in warnings[0] and "['data', 'label']" in warnings[0]
    assert "rebuilding" in warnings[0]

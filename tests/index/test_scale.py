"""Issue 10: an index of a few bytes per file, a cache to trust, modes of verifying it."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from h5pool import (
    CorpusIndex,
    FileChangedError,
    MissingFileError,
    PooledH5Dataset,
    UnreadableFileError,
)
from h5pool.index.cache import IndexCacheError
from h5pool.index.corpus_index import read_cache, save_index
from h5pool.index.member_names import MemberNames, name_pattern
from h5pool.index.paths import PathList
from helpers.corpus import decode_sample, encoded, make_corpus, write_rows_file

KEYS = ["data", "label"]


# -- compact paths and names ------------------------------------------------------------

path_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


@given(st.lists(path_text, max_size=20), st.sampled_from(["", "/data/corpus/", "s3://b/p/"]))
def test_path_list_gives_back_every_path(names: list[str], root: str) -> None:
    paths = [root + name for name in names]
    packed = PathList(paths)
    assert list(packed) == paths and len(packed) == len(paths)
    assert [packed[i] for i in range(-len(paths), len(paths))] == paths + paths
    assert packed == paths and pickle.loads(pickle.dumps(packed)) == paths
    assert PathList.from_arrays(*packed.arrays()) == paths


def test_path_list_refuses_offsets_that_do_not_fit() -> None:
    root, blob, offsets = PathList(["/a/x.h5", "/a/yy.h5"]).arrays()
    for bad in (offsets[:-1], offsets[::-1], offsets + 1):
        with pytest.raises(ValueError):
            PathList.from_arrays(root, blob, bad)


@pytest.mark.parametrize(
    ("names", "patterned"),
    [
        ([f"trajectory_{i}" for i in range(12)], True),
        ([f"demo_{i:04d}.run" for i in range(3, 9)], True),
        (["a"], False),
        (["x_1", "x_2", "x_4"], False),
        (["run7"], True),
        (["chunked_7", "trajectory_1", "trajectory_2"], False),
    ],
)
def test_member_names_keep_patterns_as_one_template(names: list[str], patterned: bool) -> None:
    assert (name_pattern(names) is not None) == patterned
    members = MemberNames.from_files([names, ["other"], names])
    assert [members.names_of(f, len(n)) for f, n in enumerate([names, ["other"], names])] == [
        tuple(names),
        ("other",),
        tuple(names),
    ]
    explicit = 1 + (0 if patterned else 2 * len(names))
    assert len(members.explicit) == explicit


def write_member_file(path: Path, number: int, members: int) -> None:
    with h5py.File(path, "w") as f:
        group = f.create_group("runs")
        for member in range(members):
            group.create_dataset(f"trajectory_{member}", data=np.full(3, encoded(number, member)))


def test_members_layout_index_is_o_files_and_survives_the_cache(tmp_path: Path) -> None:
    for number in range(4):
        write_member_file(tmp_path / f"t_{number}.h5", number, 5 + number)
    cache = tmp_path / "index.npz"
    ds = PooledH5Dataset(tmp_path, layout="members", group="runs", index_cache=cache)
    assert len(ds.index.members.explicit) == 0  # no name stored per sample
    again = PooledH5Dataset(tmp_path, layout="members", group="runs", index_cache=cache)
    assert again.index_stats.files_scanned == 0
    seen = [int(again[i]["data"][0]) for i in range(len(again))]
    assert seen == [encoded(f, m) for f in range(4) for m in range(5 + f)]


def test_pickle_and_memory_per_file_stay_small(tmp_path: Path) -> None:
    """Paths, counts, stamps and one key's byte map: at most 64 B/file pickled and
    100 B/file in memory, measured on 3,000 entries with paths of 40 characters."""
    files = [f"/scratch/project/corpus/shard_{i:06d}.h5" for i in range(3000)]
    source = make_corpus(tmp_path, files=1, rows=4)
    real = PooledH5Dataset(source, "data")
    maps = {"data": real.index.maps["data"]}
    repeat = np.zeros(len(files), dtype=np.int64)
    key_maps = maps["data"]
    key_maps.spec_ids, key_maps.positions = key_maps.spec_ids[repeat], key_maps.positions[repeat]
    index = CorpusIndex(
        files=files,  # type: ignore[arg-type]
        counts=np.full(len(files), 100),
        layout="rows",
        keys=("data",),
        group="/",
        sizes=np.full(len(files), 10**9),
        mtimes=np.arange(len(files)) + 1_700_000_000 * 10**9,
        maps=maps,
    )
    per_file_pickled = len(pickle.dumps(index)) / len(files)
    per_file_held = index.nbytes / len(files)
    assert per_file_pickled <= 64, per_file_pickled
    assert per_file_held <= 100, per_file_held
    cache = tmp_path / "index.npz"
    save_index(index, cache)
    assert os.path.getsize(cache) / len(files) <= 64


# -- the cache file ---------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    make_corpus(tmp_path / "corpus", files=6, rows=5, width=3)
    return tmp_path / "corpus"


def values(ds: PooledH5Dataset) -> list[tuple[int, int]]:
    return [decode_sample(ds[i]) for i in range(len(ds))]


def rewrite_npz(cache: Path, change: Any) -> None:
    """Rewrite one array of a cache file *and* its checksum: only the consistency
    checks can then catch it."""
    index, meta = read_cache(cache)
    change(index)
    save_index(index, cache, {k: v for k, v in meta.items() if k in ("source", "skipped")})


@pytest.mark.parametrize(
    "damage",
    ["zero-counts-tampered", "short-sizes", "negative-counts", "garbage", "truncated", "version"],
)
def test_a_damaged_cache_is_rebuilt_with_a_warning(
    corpus: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "index.npz"
    expected = values(PooledH5Dataset(corpus, KEYS, index_cache=cache))
    if damage == "zero-counts-tampered":  # arrays changed, checksum left: caught by it
        with np.load(cache) as saved:
            arrays = {k: saved[k] for k in saved.files}
        arrays["counts"] = np.zeros_like(arrays["counts"])
        np.savez(cache, **arrays)
    elif damage == "short-sizes":

        def shorten(index: CorpusIndex) -> None:
            index.sizes = index.sizes[:-1]

        rewrite_npz(cache, shorten)
    elif damage == "negative-counts":

        def negate(index: CorpusIndex) -> None:
            index.counts = -index.counts

        rewrite_npz(cache, negate)
    elif damage == "garbage":
        cache.write_bytes(b"not a zip file" * 10)
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:200])
    else:
        with zipfile.ZipFile(cache, "a") as archive:
            archive.writestr("meta.npy", b"")  # duplicate name: unreadable meta
    with pytest.raises(IndexCacheError):
        read_cache(cache)
    with caplog.at_level(logging.WARNING, logger="h5pool"):
        ds = PooledH5Dataset(corpus, KEYS, index_cache=cache)
    assert "rebuilding" in caplog.text
    assert ds.index_stats.files_scanned == 6 and values(ds) == expected
    read_cache(cache)  # the rebuilt cache is sound


def test_a_cache_path_that_is_a_folder_is_a_clear_error(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder"):
        PooledH5Dataset(corpus, KEYS, index_cache=tmp_path)


def test_the_cache_is_written_atomically_and_leaves_no_temporary(
    corpus: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "caches" / "index.npz"
    cache.parent.mkdir()
    PooledH5Dataset(corpus, KEYS, index_cache=cache)
    assert sorted(p.name for p in cache.parent.iterdir()) == ["index.npz", "index.npz.lock"]
    before = cache.stat().st_ino
    write_rows_file(corpus / "shard_00099.h5", 99, rows=2, width=3)
    PooledH5Dataset(corpus, KEYS, index_cache=cache)
    assert cache.stat().st_ino != before  # replaced by a new file, never written in place
    assert sorted(p.name for p in cache.parent.iterdir()) == ["index.npz", "index.npz.lock"]


def build_in_process(corpus: str, cache: str) -> tuple[int, int]:
    ds = PooledH5Dataset(corpus, KEYS, index_cache=cache, scan_processes=1)
    return ds.index_stats.files_scanned, len(ds)


@pytest.mark.slow
def test_processes_starting_together_build_the_cache_once(corpus: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "shared.npz")
    with multiprocessing.get_context("forkserver").Pool(4) as workers:
        results = workers.starmap(build_in_process, [(str(corpus), cache)] * 4)
    assert sorted(scanned for scanned, _ in results) == [0, 0, 0, 6]
    assert {length for _, length in results} == {30}


# -- verify modes -----------------------------------------------------------------------


def test_verify_modes_with_added_removed_and_replaced_files(corpus: Path, tmp_path: Path) -> None:
    cache = tmp_path / "index.npz"
    PooledH5Dataset(corpus, KEYS, index_cache=cache)

    # Added: listing and stat see it; trust does not.
    write_rows_file(corpus / "shard_00006.h5", 6, rows=5, width=3)
    trusted = PooledH5Dataset(corpus, KEYS, index_cache=cache, verify="trust")
    assert len(trusted) == 30 and trusted.index_stats.files_scanned == 0
    listed = PooledH5Dataset(corpus, KEYS, index_cache=cache, verify="listing")
    assert len(listed) == 35 and listed.index_stats.files_scanned == 1
    assert values(listed)[-1] == (6, 4)

    # Removed: trust fails at the first read of that file, naming it; the others drop it.
    os.remove(corpus / "shard_00002.h5")
    trusted = PooledH5Dataset(corpus, KEYS, index_cache=cache, verify="trust")
    with pytest.raises(MissingFileError, match="shard_00002"):
        trusted[12]
    for mode in ("listing", "stat"):
        ds = PooledH5Dataset(corpus, KEYS, index_cache=cache, verify=mode)
        assert len(ds) == 30 and 2 not in {f for f, _ in values(ds)}

    # Replaced in place with other rows: trust and listing refuse the read, stat rescans.
    replacement = tmp_path / "new.h5"
    write_rows_file(replacement, 44, rows=5, width=3)
    shutil.copyfile(replacement, corpus / "shard_00003.h5")
    for mode in ("trust", "listing"):
        ds = PooledH5Dataset(corpus, KEYS, index_cache=cache, verify=mode)
        assert ds.index_stats.files_scanned == 0
        with pytest.raises(FileChangedError, match="shard_00003"):
            values(ds)
    fresh = PooledH5Dataset(corpus, KEYS, index_cache=cache, verify="stat")
    assert fresh.index_stats.files_scanned == 1
    assert (44, 0) in values(fresh)


def test_trust_needs_the_same_files_argument(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "index.npz"
    PooledH5Dataset(corpus, KEYS, index_cache=cache)
    some = sorted(str(p) for p in corpus.iterdir())[:2]
    with caplog.at_level(logging.WARNING, logger="h5pool"):
        ds = PooledH5Dataset(some, KEYS, index_cache=cache, verify="trust")
    assert "built from other files" in caplog.text and len(ds) == 10


def test_verify_must_be_a_known_mode(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="verify"):
        PooledH5Dataset(corpus, KEYS, index_cache=tmp_path / "i.npz", verify="never")  # type: ignore[arg-type]


# -- scanning in processes ----------------------------------------------------------------


@pytest.mark.slow
def test_scanning_in_processes_gives_the_same_index(corpus: Path, tmp_path: Path) -> None:
    bad = corpus / "shard_00003_bad.h5"
    bad.write_bytes(b"garbage" * 50)
    one = PooledH5Dataset(corpus, KEYS, on_error="skip", scan_processes=1)
    two = PooledH5Dataset(corpus, KEYS, on_error="skip", scan_processes=2)
    assert two.index_stats.processes == 2 and one.index_stats.processes == 1
    assert two.index.same_entries(one.index) and two.skipped == one.skipped
    assert [p for p, _ in two.skipped] == [str(bad)]
    assert values(two) == values(one)
    named = sorted(str(p) for p in corpus.iterdir())  # named, not listed: an error
    with pytest.raises(UnreadableFileError) as raised:
        PooledH5Dataset(named, KEYS, scan_processes=2)
    assert raised.value.path == str(bad)


def same_maps(one: CorpusIndex, other: CorpusIndex) -> bool:
    """Byte maps equal file by file (spec numbering and table order may differ)."""
    for key in one.maps:
        for number, count in enumerate(one.counts.tolist()):
            mine = one.maps[key].file_map(number, count)
            theirs = other.maps[key].file_map(number, count)
            if mine.spec != theirs.spec or mine.offset != theirs.offset:
                return False
            if not np.array_equal(mine.chunks, theirs.chunks):
                return False
    return True


def test_a_cached_start_with_changes_equals_a_fresh_scan(tmp_path: Path) -> None:
    """Kept, removed, added and replaced files of mixed storage, put together from the
    cache's arrays and new scans, give the index a scan from nothing gives."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    storages: list[dict[str, Any]] = [
        {},
        {"chunks": (3, 2), "compression": "gzip"},
        {"chunks": (4, 3)},
        {"chunks": (2, 1), "compression": "lzf"},
    ]
    for number in range(12):
        write_rows_file(
            folder / f"f_{number}.h5", number, 5 + number % 4, 3, **storages[number % 4]
        )
    cache = tmp_path / "index.npz"
    PooledH5Dataset(folder, KEYS, index_cache=cache)
    os.remove(folder / "f_3.h5")
    write_rows_file(folder / "f_12.h5", 12, 9, 3, chunks=(5, 3), compression="gzip")
    write_rows_file(tmp_path / "new.h5", 40, 7, 3, chunks=(2, 3))
    shutil.copyfile(tmp_path / "new.h5", folder / "f_6.h5")
    for mode in ("stat", "listing"):
        cached = PooledH5Dataset(folder, KEYS, index_cache=cache, verify=mode)  # type: ignore[arg-type]
        scratch = PooledH5Dataset(folder, KEYS)
        if mode == "stat":
            assert cached.index.same_entries(scratch.index) and same_maps(
                cached.index, scratch.index
            )
            assert values(cached) == values(scratch)
        assert cached.index_stats.files_scanned == (2 if mode == "stat" else 0)


def test_members_from_the_cache_and_new_scans(tmp_path: Path) -> None:
    for number in range(3):
        write_member_file(tmp_path / f"t_{number}.h5", number, 3)
    with h5py.File(tmp_path / "t_1.h5", "a") as f:
        f["runs"].create_dataset("odd_name", data=np.full(3, encoded(1, 99)))
    cache = tmp_path / "index.npz"
    PooledH5Dataset(tmp_path, layout="members", group="runs", index_cache=cache)
    write_member_file(tmp_path / "t_3.h5", 3, 2)
    os.remove(tmp_path / "t_0.h5")
    cached = PooledH5Dataset(tmp_path, layout="members", group="runs", index_cache=cache)
    scratch = PooledH5Dataset(tmp_path, layout="members", group="runs")
    assert cached.index.same_entries(scratch.index)
    assert [int(cached[i]["data"][0]) for i in range(len(cached))] == [
        int(scratch[i]["data"][0]) for i in range(len(scratch))
    ]

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h5pool import CorpusIndex
from h5pool.index.listing import expand_files, natural_key
from helpers.corpus import index_of_counts

counts_strategy = st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=60).filter(
    lambda counts: sum(counts) > 0
)


def brute_force(counts: list[int]) -> list[tuple[int, int]]:
    return [(f, r) for f, count in enumerate(counts) for r in range(count)]


@given(counts_strategy, st.data())
def test_locate_matches_brute_force(counts: list[int], data: st.DataObject) -> None:
    index = index_of_counts(counts)
    expected = brute_force(counts)
    assert len(index) == len(expected)
    position = data.draw(st.integers(min_value=-len(expected), max_value=len(expected) - 1))
    assert index.locate(position) == expected[position]


@given(counts_strategy, st.data())
def test_locate_many_matches_locate(counts: list[int], data: st.DataObject) -> None:
    index = index_of_counts(counts)
    total = len(index)
    positions = data.draw(st.lists(st.integers(min_value=-total, max_value=total - 1), max_size=80))
    files, rows = index.locate_many(positions)
    assert list(zip(files.tolist(), rows.tolist(), strict=True)) == [
        index.locate(p) for p in positions
    ]


@given(counts_strategy)
def test_out_of_range_raises(counts: list[int]) -> None:
    index = index_of_counts(counts)
    total = len(index)
    for bad in (total, -total - 1):
        with pytest.raises(IndexError):
            index.locate(bad)
        with pytest.raises(IndexError):
            index.locate_many([0, bad])


@settings(max_examples=25)
@given(counts_strategy)
def test_save_and_load_round_trip(
    tmp_path_factory: pytest.TempPathFactory, counts: list[int]
) -> None:
    path = Path(tmp_path_factory.mktemp("idx")) / "index.npz"
    index = index_of_counts(counts)
    index.save(path)
    loaded = CorpusIndex.load(path)
    assert loaded.files == index.files
    assert np.array_equal(loaded.counts, index.counts)
    assert np.array_equal(loaded.ends, index.ends)
    assert np.array_equal(loaded.mtimes, index.mtimes)
    assert (loaded.layout, loaded.keys, loaded.group) == ("rows", ("data",), "/")


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=20))
def test_natural_key_orders_numbers_by_value(numbers: list[int]) -> None:
    names = [f"shard_{n}.h5" for n in numbers]
    assert sorted(names, key=natural_key) == [f"shard_{n}.h5" for n in sorted(numbers)]


names_st = st.lists(
    st.tuples(
        st.sampled_from(["", "a", "a1", "b10", "2", "x_"]),
        st.sampled_from(["s", "s_", "1", "10", "s2", "-", "_9"]),
        st.integers(0, 120),
    ),
    min_size=1,
    max_size=25,
    unique=True,
)


@settings(max_examples=30)
@given(names_st)
def test_folder_listing_is_the_natural_order_of_full_paths(
    tmp_path_factory: pytest.TempPathFactory, names: list[tuple[str, str, int]]
) -> None:
    """Sorting by the path below the folder gives the order of the full paths."""
    root = Path(tmp_path_factory.mktemp("listing")) / "data7"
    made = []
    for folder, stem, number in names:
        parent = root / folder if folder else root
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f"{stem}{number}.h5"
        path.touch()
        made.append(str(path))
    assert expand_files(str(root)) == sorted(set(made), key=natural_key)

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from cachetools import LRUCache
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from h5pool import BlockShuffleSampler, CorpusIndex, HandlePool, PooledH5Dataset
from helpers.corpus import collate_with_worker_stats, index_of_counts


@dataclass
class IndexOnly:
    """A dataset reduced to what the sampler reads: a real index and a real pool."""

    index: CorpusIndex
    pool: HandlePool


def indexed(counts: list[int], max_open: int = 8) -> IndexOnly:
    return IndexOnly(index_of_counts(counts), HandlePool(max_open=max_open))


counts_st = st.lists(st.integers(0, 30), min_size=1, max_size=40).filter(lambda c: sum(c) > 0)


@given(counts_st, st.integers(1, 12), st.booleans(), st.integers(0, 3), st.integers(0, 2**32))
def test_one_rank_epoch_is_a_permutation(
    counts: list[int], per_block: int, shuffle: bool, epoch: int, seed: int
) -> None:
    sampler = BlockShuffleSampler(
        indexed(counts),
        files_per_block=per_block,
        shuffle=shuffle,
        seed=seed,
        num_replicas=1,
        rank=0,
    )
    sampler.set_epoch(epoch)
    order = list(sampler)
    assert sorted(order) == list(range(sum(counts)))
    assert len(order) == len(sampler)
    if not shuffle:
        assert order == list(range(sum(counts)))


@given(counts_st, st.integers(1, 12), st.integers(0, 2**32))
def test_block_order_opens_each_file_once_in_a_block_sized_pool(
    counts: list[int], per_block: int, seed: int
) -> None:
    """The locality promise: a pool of files_per_block handles opens every file once."""
    data = indexed(counts)
    sampler = BlockShuffleSampler(
        data, files_per_block=per_block, seed=seed, num_replicas=1, rank=0
    )
    pool: LRUCache[int, bool] = LRUCache(maxsize=per_block)
    opens = 0
    for index in sampler:
        file_number, _ = data.index.locate(index)
        if file_number not in pool:
            opens += 1
        pool[file_number] = True
    assert opens == sum(1 for c in counts if c)


@given(counts_st, st.integers(1, 5), st.integers(1, 12), st.booleans(), st.integers(0, 9))
def test_ranks_are_disjoint_and_cover(
    counts: list[int], replicas: int, per_block: int, drop_last: bool, epoch: int
) -> None:
    total = sum(counts)
    shares = []
    for rank in range(replicas):
        sampler = BlockShuffleSampler(
            indexed(counts),
            files_per_block=per_block,
            num_replicas=replicas,
            rank=rank,
            drop_last=drop_last,
            seed=3,
        )
        sampler.set_epoch(epoch)
        shares.append(list(sampler))
    lengths = {len(share) for share in shares}
    assert len(lengths) == 1  # every rank has the same len()
    combined = Counter(i for share in shares for i in share)
    if drop_last:
        assert lengths == {total // replicas}
        assert all(n == 1 for n in combined.values())  # disjoint
        assert len(combined) == total - total % replicas  # only the tail is dropped
    else:
        assert set(combined) == set(range(total))  # covers every sample
        assert sum(combined.values()) == -(-total // replicas) * replicas
        assert sum(n - 1 for n in combined.values()) == sum(combined.values()) - total


@given(counts_st, st.integers(0, 2**32), st.integers(0, 50), st.integers(1, 4))
def test_same_seed_and_epoch_give_the_same_order(
    counts: list[int], seed: int, epoch: int, replicas: int
) -> None:
    def order(rank: int) -> list[int]:
        sampler = BlockShuffleSampler(indexed(counts), seed=seed, num_replicas=replicas, rank=rank)
        sampler.set_epoch(epoch)
        return list(sampler)

    for rank in range(replicas):
        assert order(rank) == order(rank)


def test_epochs_and_seeds_change_the_order() -> None:
    data = indexed([50] * 40)
    sampler = BlockShuffleSampler(data, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(BlockShuffleSampler(data, seed=2)) != first


@settings(max_examples=60)
@given(counts_st, st.integers(1, 3), st.booleans(), st.data())
def test_resume_continues_with_exactly_the_rest(
    counts: list[int], replicas: int, drop_last: bool, data: st.DataObject
) -> None:
    rank = data.draw(st.integers(0, replicas - 1))
    make = lambda: BlockShuffleSampler(  # noqa: E731
        indexed(counts), seed=7, num_replicas=replicas, rank=rank, drop_last=drop_last
    )
    reference = make()
    reference.set_epoch(4)
    full = list(reference)
    cut = data.draw(st.integers(0, len(full)))
    first = make()
    first.set_epoch(4)
    iterator = iter(first)
    head = [next(iterator) for _ in range(cut)]
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.epoch == 4
    assert head + list(resumed) == full
    assert list(resumed) == full  # the resume applies to one iteration only


def test_default_block_size_follows_the_pool() -> None:
    assert BlockShuffleSampler(indexed([1] * 10, max_open=64)).files_per_block == 32
    assert BlockShuffleSampler(indexed([1] * 10, max_open=1)).files_per_block == 1
    with pytest.raises(ValueError):
        BlockShuffleSampler(indexed([1]), num_replicas=2, rank=2)
    with pytest.raises(ValueError):
        BlockShuffleSampler(indexed([1]), files_per_block=0)


def test_stateful_dataloader_resume(corpus_50: list[str]) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    ds = PooledH5Dataset(corpus_50, ["data", "label"], max_open=8)

    def loader(sampler: BlockShuffleSampler) -> object:
        return stateful.StatefulDataLoader(
            ds, batch_size=8, sampler=sampler, num_workers=2, collate_fn=collate_with_worker_stats
        )

    reference = [label for b in loader(BlockShuffleSampler(ds, seed=5)) for label in b["labels"]]
    assert sorted(reference) == sorted(f * 1000 + r for f in range(50) for r in range(20))
    first = loader(BlockShuffleSampler(ds, seed=5))
    head: list[int] = []
    for number, batch in enumerate(first):  # type: ignore[attr-defined]
        head.extend(batch["labels"])
        if number == 40:
            state = first.state_dict()  # type: ignore[attr-defined]
            break
    resumed = loader(BlockShuffleSampler(ds, seed=5))
    resumed.load_state_dict(state)  # type: ignore[attr-defined]
    tail = [label for b in resumed for label in b["labels"]]  # type: ignore[attr-defined]
    assert head + tail == reference


def test_file_opens_per_worker_on_5000_files(corpus_5000: str) -> None:
    """Default settings, pool of 64: opens per worker <= 1.1 x files it reads from."""
    ds = PooledH5Dataset(corpus_5000, ["data", "label"], max_open=64)
    sampler = BlockShuffleSampler(ds, seed=11)
    loader = DataLoader(
        ds, batch_size=64, sampler=sampler, num_workers=2, collate_fn=collate_with_worker_stats
    )
    files_read: dict[int, set[int]] = {}
    misses: dict[int, int] = {}
    peaks: dict[int, int] = {}
    seen: Counter[int] = Counter()
    for batch in loader:
        worker = batch["worker"]
        files_read.setdefault(worker, set()).update(label // 1000 for label in batch["labels"])
        misses[worker] = max(misses.get(worker, 0), batch["misses"])
        peaks[worker] = max(peaks.get(worker, 0), batch["peak_open"])
        seen.update(batch["labels"])
        assert batch["data_ok"]
    assert len(seen) == 20000 and set(seen.values()) == {1}
    assert set(files_read) == {0, 1}
    for worker, files in files_read.items():
        assert misses[worker] <= 1.1 * len(files), (worker, misses[worker], len(files))
        assert peaks[worker] <= 64


@given(
    counts_st,
    st.integers(1, 8),
    st.integers(2, 4),
    st.integers(1, 16),
    st.integers(1, 3),
    st.booleans(),
)
def test_worker_interleaving_keeps_every_sample_and_each_worker_to_its_blocks(
    counts: list[int], per_block: int, workers: int, batch: int, replicas: int, drop_last: bool
) -> None:
    plain_shares, dealt_shares = [], []
    for rank in range(replicas):
        common = dict(
            files_per_block=per_block, num_replicas=replicas, rank=rank, drop_last=drop_last, seed=9
        )
        plain_shares.append(list(BlockShuffleSampler(indexed(counts), **common)))
        dealt = BlockShuffleSampler(
            indexed(counts), **common, batch_size=batch, num_workers=workers
        )
        dealt_shares.append(list(dealt))
        assert len(dealt_shares[-1]) == len(dealt)
    # The same samples per rank, only reordered for the workers.
    for plain, dealt_order in zip(plain_shares, dealt_shares, strict=True):
        assert sorted(plain) == sorted(dealt_order)
    # DataLoader gives batch k to worker k % workers: until the first stream runs
    # dry, a worker's batches contain only samples of blocks b with b % workers == it.
    data = indexed(counts)
    sampler = BlockShuffleSampler(data, files_per_block=per_block, seed=9, num_replicas=1, rank=0)
    blocks = sampler.epoch_plan().block_of_files()
    dealt_order = list(
        BlockShuffleSampler(
            data,
            files_per_block=per_block,
            seed=9,
            num_replicas=1,
            rank=0,
            batch_size=batch,
            num_workers=workers,
        )
    )
    file_of = np.searchsorted(data.index.ends, dealt_order, side="right")
    owners = blocks[file_of] % workers
    per_worker = Counter(owners.tolist())
    clean_batches = min(per_worker.get(w, 0) // batch for w in range(workers))
    for k in range(clean_batches * workers):
        chunk = owners[k * batch : (k + 1) * batch]
        assert set(chunk.tolist()) == {k % workers}


def test_workers_open_only_their_own_files(corpus_5000: str) -> None:
    ds = PooledH5Dataset(corpus_5000, ["data", "label"], max_open=64)
    sampler = BlockShuffleSampler(ds, seed=11, batch_size=64, num_workers=2)
    loader = DataLoader(
        ds, batch_size=64, sampler=sampler, num_workers=2, collate_fn=collate_with_worker_stats
    )
    files_read: dict[int, set[int]] = {}
    misses: dict[int, int] = {}
    labels: Counter[int] = Counter()
    for batch in loader:
        worker = batch["worker"]
        files_read.setdefault(worker, set()).update(label // 1000 for label in batch["labels"])
        misses[worker] = max(misses.get(worker, 0), batch["misses"])
        labels.update(batch["labels"])
    assert len(labels) == 20000 and set(labels.values()) == {1}
    both = files_read[0] & files_read[1]
    # Only the partial batches at the very end may mix the workers' files.
    assert len(both) <= 2 * 64 // 4, len(both)
    assert misses[0] + misses[1] <= 1.1 * 5000


def test_state_dict_under_worker_prefetch_warns_once(corpus_50: list[str]) -> None:
    """A plain DataLoader with workers draws indices ahead of delivery: the
    sampler's state would skip them on resume, so state_dict() says so, once."""
    ds = PooledH5Dataset(corpus_50, ["data", "label"], max_open=8)
    sampler = BlockShuffleSampler(ds, seed=5)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=2, prefetch_factor=4)
    iterator = iter(loader)
    delivered = sum(len(next(iterator)["label"]) for _ in range(3))
    with pytest.warns(RuntimeWarning, match=r"draws up to 64 samples ahead.*StatefulDataLoader"):
        state = sampler.state_dict()
    assert state["yielded"] > delivered  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler.state_dict()  # once per sampler
    del iterator
    in_process = BlockShuffleSampler(ds, seed=5)
    single = iter(DataLoader(ds, batch_size=8, sampler=in_process, num_workers=0))
    next(single)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert in_process.state_dict()["yielded"] == 8  # no prefetch: exact, no warning

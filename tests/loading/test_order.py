"""The epoch order worked out from per-file counts agrees with writing it all out."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from h5pool.loading.order import EpochOrder, worker_stretches

counts_st = st.lists(st.integers(0, 20), min_size=1, max_size=30).filter(lambda c: sum(c) > 0)


def written_out(order: EpochOrder) -> np.ndarray:
    """The reference: every block laid out, one after the other."""
    blocks = [order.block(b) for b in range(order.num_blocks)]
    return np.concatenate(blocks) if blocks else np.empty(0, dtype=np.int64)


def interleave_reference(
    samples: np.ndarray, worker_of: np.ndarray, batch_size: int, workers: int
) -> np.ndarray:
    """The O(samples) dealing the sampler used before: streams per worker, full
    batches round-robin, partial batches at the end."""
    streams = [samples[worker_of == w] for w in range(workers)]
    full = [len(s) // batch_size for s in streams]
    dealt = []
    for batch in range(max(full)):
        for w, stream in enumerate(streams):
            if batch < full[w]:
                dealt.append(stream[batch * batch_size : (batch + 1) * batch_size])
    dealt.extend(s[full[w] * batch_size :] for w, s in enumerate(streams))
    return np.concatenate(dealt)


@given(counts_st, st.integers(1, 7), st.booleans(), st.integers(0, 2**32), st.integers(0, 5))
def test_the_stream_is_a_permutation_with_blocks_of_whole_files(
    counts: list[int], per_block: int, shuffle: bool, seed: int, epoch: int
) -> None:
    order = EpochOrder(np.array(counts), per_block, shuffle=shuffle, seed=seed, epoch=epoch)
    stream = written_out(order)
    assert sorted(stream.tolist()) == list(range(sum(counts)))
    if not shuffle:
        assert stream.tolist() == list(range(sum(counts)))
    # Every block holds exactly the samples of its files.
    ends = np.cumsum(counts)
    blocks_of_files = order.block_of_files()
    start = 0
    for number, end in enumerate(order.block_ends.tolist()):
        files = np.searchsorted(ends, stream[start:end], side="right")
        assert set(blocks_of_files[files].tolist()) <= {number}
        start = end


@given(
    counts_st,
    st.integers(1, 7),
    st.integers(0, 2**32),
    st.integers(0, 120),
    st.integers(0, 120),
)
def test_take_is_a_slice_of_the_padded_stream(
    counts: list[int], per_block: int, seed: int, begin: int, length: int
) -> None:
    order = EpochOrder(np.array(counts), per_block, shuffle=True, seed=seed, epoch=1)
    stream = written_out(order)
    padded = np.resize(stream, begin + length)
    assert order.take(begin, begin + length).tolist() == padded[begin:].tolist()
    pieces = list(order.chunks(begin, begin + length))
    joined = np.concatenate(pieces).tolist() if pieces else []
    assert joined == padded[begin:].tolist()


@given(
    counts_st,
    st.integers(1, 5),
    st.integers(0, 60),
    st.integers(1, 60),
    st.integers(1, 9),
    st.integers(2, 4),
)
def test_dealing_for_workers_matches_the_written_out_dealing(
    counts: list[int], per_block: int, begin: int, length: int, batch: int, workers: int
) -> None:
    order = EpochOrder(np.array(counts), per_block, shuffle=True, seed=3, epoch=2)
    share = np.resize(written_out(order), begin + length)[begin:]
    file_of = np.searchsorted(np.cumsum(counts), share, side="right")
    expected = interleave_reference(
        share, order.block_of_files()[file_of] % workers, batch, workers
    )
    dealt = list(order.dealt_for_workers(begin, begin + length, batch, workers))
    assert np.concatenate(dealt).tolist() == expected.tolist()


@given(st.integers(0, 50), st.integers(1, 5))
def test_worker_stretches_deal_contiguous_stretches_round_robin(batches: int, workers: int) -> None:
    dealt = worker_stretches(batches, workers).tolist()
    assert sorted(dealt) == list(range(batches))
    stretches = [s.tolist() for s in np.array_split(np.arange(batches), workers)]
    shortest = min(len(s) for s in stretches)
    for worker, stretch in enumerate(stretches):
        if workers > 1:
            assert dealt[worker::workers][:shortest] == stretch[:shortest]


def test_a_million_files_order_without_touching_samples() -> None:
    """At 1 M files and 100 M samples, a block is reached without the epoch."""
    counts = np.full(1_000_000, 100, dtype=np.int64)
    order = EpochOrder(counts, 32, shuffle=True, seed=0, epoch=0)
    assert order.total == 100_000_000
    middle = order.take(50_000_000, 50_000_064)
    assert len(middle) == 64 and len(set(middle.tolist())) == 64
    assert order.block_ends.nbytes < 1_000_000

"""The Loader's fetching ahead, apart from object storage (which
``tests/pool/test_remote_blocks.py`` covers over moto)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from h5pool import PooledH5Dataset
from h5pool.loading.fetch_ahead import SAMPLE_EVERY, Prefetcher, fetching_ahead
from helpers.corpus import make_corpus


def test_each_batch_is_prefetched_count_batches_before_it_is_handed_on() -> None:
    events: list[tuple[str, int]] = []
    batches = [np.array([number]) for number in range(7)]
    for batch in fetching_ahead(
        iter(batches), 3, lambda indices: events.append(("ask", int(indices[0])))
    ):
        events.append(("read", int(batch[0])))
    asked = [n for kind, n in events if kind == "ask"]
    read = [n for kind, n in events if kind == "read"]
    assert asked == read == list(range(7))
    for number in range(4):  # batch n is read once n + 3 was asked for
        assert events.index(("ask", number + 3)) < events.index(("read", number))


def test_idle_prefetches_are_sampled(tmp_path: Path) -> None:
    """Local files have nothing to fetch ahead: after two idle prefetches only
    every eighth batch is planned."""
    ds = PooledH5Dataset(make_corpus(tmp_path, 2, 10), "data")
    submitted: list[Any] = []

    def run_now(function: Any, indices: Any) -> None:
        submitted.append(indices)
        function(indices)

    prefetcher = Prefetcher(ds, run_now)
    for number in range(40):
        prefetcher(np.array([number % len(ds)]))
    assert prefetcher.sent == 0
    sampled = [seen for seen in range(3, 41) if seen % SAMPLE_EVERY == 0]
    assert len(submitted) == 2 + len(sampled)

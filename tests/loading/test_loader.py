"""h5pool.Loader: order, exactly once, padding, resume, shutdown, errors, workers, stats."""

from __future__ import annotations

import io
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from h5pool import CorpusError, Loader, PooledH5Dataset
from helpers.corpus import encoded, make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """7 files of 13 rows: sizes that divide unevenly by batches and ranks."""
    directory = tmp_path_factory.mktemp("loader")
    return make_corpus(directory, files=7, rows=13, width=3)


@pytest.fixture(scope="module")
def gzip_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    directory = tmp_path_factory.mktemp("loader_gzip")
    return make_corpus(directory, files=5, rows=12, width=4, chunks=(4, 4), compression="gzip")


def labels_of(batch: dict[str, Any]) -> list[int]:
    data, label = batch["data"], batch["label"]
    assert bool((data == label[:, None].float()).all()), "a row's data does not match its label"
    return [int(v) for v in label]


def global_index(label: int, rows: int = 13) -> int:
    file_number, row = divmod(label, 1000)
    return file_number * rows + row


def epoch_labels(loader: Loader) -> list[int]:
    return [label for batch in loader for label in labels_of(batch)]


@settings(max_examples=25, deadline=None)
@given(
    batch_size=st.integers(1, 20),
    replicas=st.integers(1, 4),
    drop_last=st.booleans(),
    files_per_block=st.integers(1, 7),
    seed=st.integers(0, 3),
)
def test_every_sample_once_across_ranks(
    corpus: list[str],
    batch_size: int,
    replicas: int,
    drop_last: bool,
    files_per_block: int,
    seed: int,
) -> None:
    ds = PooledH5Dataset(corpus, ["data", "label"], max_open=3)
    seen: Counter[int] = Counter()
    lengths = set()
    for rank in range(replicas):
        loader = Loader(
            ds,
            batch_size,
            seed=seed,
            drop_last=drop_last,
            num_replicas=replicas,
            rank=rank,
            files_per_block=files_per_block,
            num_threads=2,
        )
        labels = epoch_labels(loader)
        assert len(labels) == sum(len(b) for b in loader.batches())
        assert sum(1 for _ in loader.batches()) == len(loader)
        lengths.add(len(loader))
        seen.update(global_index(label) for label in labels)
    total = len(ds)
    assert len(lengths) == 1  # every rank runs the same number of steps
    if drop_last:
        assert max(seen.values()) == 1
        assert total - len(seen) < replicas + batch_size * replicas
    else:
        assert set(seen) == set(range(total))
        assert sum(seen.values()) - total < replicas  # padding repeats fewer than one per rank


def test_order_is_deterministic_and_changes_each_epoch(corpus: list[str]) -> None:
    ds = PooledH5Dataset(corpus, ["data", "label"])
    first = Loader(ds, 8, seed=3, num_threads=2)
    again = Loader(ds, 8, seed=3, num_threads=1)
    epoch0 = epoch_labels(first)
    assert epoch0 == epoch_labels(again)
    epoch1 = epoch_labels(first)  # iterating again without set_epoch: the next epoch
    assert first.epoch == 1 and epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0)
    again.set_epoch(1)
    assert epoch_labels(again) == epoch1
    again.set_epoch(1)
    assert epoch_labels(again) == epoch1  # set_epoch pins the epoch
    plain = Loader(ds, 8, shuffle=False)
    assert [global_index(v) for v in epoch_labels(plain)] == list(range(len(ds)))


def test_resume_continues_exactly_after_delivered_batches(corpus: list[str]) -> None:
    ds = PooledH5Dataset(corpus, ["data", "label"])
    full = Loader(ds, 6, seed=9, num_threads=2, prefetch=4)
    full.set_epoch(2)
    expected = epoch_labels(full)
    interrupted = Loader(ds, 6, seed=9, num_threads=2, prefetch=4)
    interrupted.set_epoch(2)
    taken: list[int] = []
    for batch in interrupted:
        taken.extend(labels_of(batch))
        if len(taken) >= 18:
            break
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "seed": 9, "batches_delivered": 3}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored_state = torch.load(buffer, weights_only=True)
    resumed = Loader(ds, 6, seed=0, num_threads=1)
    resumed.load_state_dict(restored_state)
    assert taken + epoch_labels(resumed) == expected
    assert resumed.epoch == 2


def test_leaving_early_stops_threads_and_releases_files(gzip_corpus: list[str]) -> None:
    ds = PooledH5Dataset(gzip_corpus, ["data", "label"], max_open=2)
    before = threading.active_count()
    loader = Loader(ds, 4, num_threads=3, prefetch=3)
    for number, _batch in enumerate(loader):
        if number == 2:
            break
    assert threading.active_count() == before
    assert ds.pool.stats().pinned_files == 0
    iterator = iter(loader)
    next(iterator)
    del iterator  # garbage collection closes the generator
    assert threading.active_count() == before


def test_corpus_error_reaches_the_caller(tmp_path: Path) -> None:
    files = make_corpus(tmp_path / "c", files=4, rows=10, width=2)
    ds = PooledH5Dataset(files, ["data", "label"], max_open=1)
    os.remove(files[2])
    loader = Loader(ds, 5, shuffle=False, num_threads=2)
    with pytest.raises(CorpusError) as info:
        epoch_labels(loader)
    assert files[2] in str(info.value)
    assert ds.pool.stats().pinned_files == 0


def _double(batch: dict[str, Any]) -> dict[str, Any]:
    return {**batch, "twice": batch["label"] * 2, "pid": torch.tensor(os.getpid())}


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_workers_read_every_sample_once(gzip_corpus: list[str], context: str) -> None:
    ds = PooledH5Dataset(gzip_corpus, ["data", "label"], max_open=2)
    loader = Loader(
        ds, 5, num_workers=2, transform=_double, multiprocessing_context=context, seed=1
    )
    pids = set()
    labels: list[int] = []
    for batch in loader:
        labels.extend(labels_of(batch))
        assert torch.equal(batch["twice"], batch["label"] * 2)
        pids.add(int(batch["pid"]))
    assert sorted(global_index(v, 12) for v in labels) == list(range(len(ds)))
    assert os.getpid() not in pids and len(pids) == 2  # the transform ran in the workers
    dealt = [encoded(*divmod(int(i), 12)) for b in loader.epoch_batches() for i in b]
    assert labels == dealt  # deterministic: each worker's stretch, interleaved
    threaded = Loader(ds, 5, seed=1, num_threads=2)
    assert sorted(epoch_labels(threaded)) == sorted(labels)
    stats = loader.stats()
    assert stats["samples"] == len(ds) and stats["processes"] == 2
    assert stats["file_opens"] >= len(gzip_corpus) and stats["chunks_decoded"] > 0
    assert loader.epoch == 0
    resumed = Loader(ds, 5, num_workers=2, seed=1, multiprocessing_context=context)
    resumed.load_state_dict({"epoch": 0, "seed": 1, "batches_delivered": 3})
    rest = [label for batch in resumed for label in labels_of(batch)]
    assert labels[: len(labels) - len(rest)] + rest == labels
    assert len(labels) - len(rest) == 15


def test_stats_cover_the_epoch(gzip_corpus: list[str]) -> None:
    ds = PooledH5Dataset(gzip_corpus, ["data", "label"], max_open=2)
    loader = Loader(ds, 7, num_threads=2)
    epoch_labels(loader)
    stats = loader.stats()
    assert stats["samples"] == len(ds) and stats["batches"] == len(loader)
    assert stats["bytes_read"] == len(ds) * (4 * 4 + 8)
    assert stats["file_opens"] >= len(gzip_corpus) and stats["chunks_decoded"] == 15
    assert 0.0 <= stats["wait_fraction"] <= 1.0
    assert stats["peak_open_files_per_process"] <= 2


def test_loader_batches_are_what_the_files_hold(corpus: list[str]) -> None:
    ds = PooledH5Dataset(corpus, ["data", "label"])
    for batch, indices in zip(
        Loader(ds, 10, seed=5), Loader(ds, 10, seed=5).batches(), strict=True
    ):
        assert labels_of(batch) == [encoded(*divmod(int(i), 13)) for i in indices]
        assert batch["data"].shape == (len(indices), 3)


INTERRUPTED = """
import sys, time
from h5pool import Loader, PooledH5Dataset

def slow(batch):
    time.sleep(0.05)
    return batch

ds = PooledH5Dataset(sys.argv[1], ["data", "label"], max_open=2)
for epoch in range(1000):
    for batch in Loader(ds, 2, num_threads=2, transform=slow):
        print("batch", flush=True)
"""


def _interruptible() -> None:
    """In the child before exec: SIGINT as a shell leaves it, default and unblocked.

    An ignored or blocked SIGINT is inherited across exec (Python then installs
    no KeyboardInterrupt handler, or never sees the signal); the test process
    may carry either from the libraries its earlier tests ran.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.slow
def test_ctrl_c_stops_a_loader_loop(corpus: list[str], tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    process = subprocess.Popen(
        [sys.executable, str(script), os.path.dirname(corpus[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "batch"
    # A Ctrl-C that lands while CPython runs a finaliser is printed and dropped
    # ("Exception ignored in ..."), in any program; a user presses again.
    stderr = ""
    try:
        for _ in range(10):
            process.send_signal(signal.SIGINT)
            try:
                _, stderr = process.communicate(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        process.kill()
    assert process.returncode != 0
    assert "KeyboardInterrupt" in stderr

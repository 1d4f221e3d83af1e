"""Corrupted copies of real files: no crash, no hang, no exception outside CorpusError.

Each copy is read in a forked process of its own (a crash there is a finding,
not the end of the test run), through construction, ``ds[i]``, ``read_batch``
and ``h5pool.cli.check``.  Wrong values without an error are possible and said
in the README: a flipped bit in raw data that no checksum covers reads back
as a different value, here as in plain h5py.
"""

from __future__ import annotations

import multiprocessing
import random
import traceback
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5pool import CorpusError, PooledH5Dataset
from h5pool.cli.check import check_file
from helpers.corpus import encoded

#: Copies in the slow run (every seed) and in the fast suite (its first copies).
COPIES, FAST_COPIES = 300, 40
#: Half of the copies have their flips here, where most of the metadata is.
METADATA_BYTES = 4096
STORAGES = {
    "contiguous": {},
    "gzip-shuffle": {"chunks": (4, 8), "compression": "gzip", "shuffle": True},
    "chunked": {"chunks": (3, 8)},
    "fletcher32": {"chunks": (4, 8), "fletcher32": True},
}


def read_everything(path: str, sound: str, answers: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Runs in the forked child: every read path, then the checker, then a
    corpus of the copy and a sound file with ``on_error="skip"``, which must
    build (the copy skipped or read) whatever the damage."""
    try:
        PooledH5Dataset([path, sound], ["data", "label"], on_error="skip")
        try:
            ds = PooledH5Dataset(path, ["data", "label"])
            for i in range(len(ds)):
                ds[i]
            ds.read_batch(np.arange(len(ds)))
            outcome = "read"
        except CorpusError:
            outcome = "CorpusError"
        check = check_file(path)
        answers.put((outcome, "" if check.ok else "check: damaged"))
    except BaseException as exc:
        answers.put(("other", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"))


def originals(folder: Path) -> list[Path]:
    """Each storage, in HDF5's default format and with ``libver="latest"`` (whose
    metadata carries checksums); rows encode file 1 and their row number."""
    values = np.array([encoded(1, row) for row in range(32)])
    made = []
    for name, storage in STORAGES.items():
        for libver in ("earliest", "latest"):
            path = folder / f"{name}-{libver}.h5"
            with h5py.File(path, "w", libver=libver) as f:
                data = np.repeat(values[:, None], 8, axis=1).astype("float32")
                f.create_dataset("data", data=data, **storage)
                f.create_dataset("label", data=values)
            made.append(path)
    return made


def test_a_few_corrupted_copies(tmp_path: Path) -> None:
    """The fast suite's share of the fuzz: the first copies of seed 0."""
    check_copies(tmp_path, seed=0, copies=FAST_COPIES)


@pytest.mark.slow  # a process per copy: deselect with -m 'not slow'
@pytest.mark.parametrize("seed", [0, 1])
def test_corrupted_copies_raise_corpus_errors_or_read(tmp_path: Path, seed: int) -> None:
    check_copies(tmp_path, seed=seed, copies=COPIES // 2)


def check_copies(tmp_path: Path, seed: int, copies: int) -> None:
    """``copies`` damaged copies, each read in a forked child: a CorpusError or
    values, never another exception, a crash or a hang."""
    sources = originals(tmp_path)
    rng = random.Random(seed)
    context = multiprocessing.get_context("fork")
    outcomes: Counter[str] = Counter()
    findings: list[str] = []
    for number in range(copies):
        source = sources[number % len(sources)]
        data = bytearray(source.read_bytes())
        metadata_only = number % 2 == 1
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(min(len(data), METADATA_BYTES) if metadata_only else len(data))
            data[position] ^= 1 << rng.randrange(8)
        copy = tmp_path / f"copy{number}.h5"
        copy.write_bytes(bytes(data))
        answers = context.Queue()
        child = context.Process(target=read_everything, args=(str(copy), str(source), answers))
        child.start()
        child.join(120)  # generous: a loaded machine is slow, a hang is far slower
        if child.is_alive():
            child.kill()
            findings.append(f"{copy} ({source.name}): hang")
            continue
        if child.exitcode != 0:
            findings.append(f"{copy} ({source.name}): child died with {child.exitcode}")
            continue
        outcome, detail = answers.get(timeout=60)
        outcomes[outcome] += 1
        if outcome == "other":
            findings.append(f"{copy} ({source.name}): {detail}")
    assert not findings, "\n".join(findings)
    assert outcomes["CorpusError"] > 0 and outcomes["read"] > 0

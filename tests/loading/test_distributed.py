"""Two real torch.distributed ranks (gloo on 127.0.0.1), each with 2 DataLoader workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers.corpus import make_corpus
from helpers.paths import HELPERS_DIR, SRC_DIR, TESTS_DIR

pytestmark = pytest.mark.slow  # real processes or servers: deselect with -m 'not slow'

FILES, ROWS = 101, 9  # 909 samples: odd, so the tail and the padding are not empty


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("dist")
    make_corpus(directory, files=FILES, rows=ROWS, width=3)
    return str(directory)


def run(corpus: str, tmp_path: Path) -> dict[str, object]:
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, SRC_DIR]))
    args = [sys.executable, os.path.join(HELPERS_DIR, "distributed_check.py"), corpus, str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, object] = json.loads(out.read_text())
    return report


def test_two_ranks_share_the_corpus(corpus: str, tmp_path: Path) -> None:
    """drop_last True, then False, in one process group of two ranks."""
    report = run(corpus, tmp_path)
    total = FILES * ROWS
    assert report["samples"] == total
    ranks = sorted(report["ranks"], key=lambda r: r["rank"])  # type: ignore[arg-type, index]
    assert [r["rank"] for r in ranks] == [0, 1]
    # One shared index cache: one rank scanned every file, the other read its cache.
    assert sorted(r["files_scanned"] for r in ranks) == [0, FILES]
    for drop_last in (True, False):
        modes = [r["modes"][str(drop_last)] for r in ranks]
        assert [m["rank"] for m in modes] == [0, 1]
        assert all(m["replicas"] == 2 for m in modes)  # defaults taken from the process group
        check_epochs(modes, drop_last, total)


def check_epochs(modes: list[dict[str, Any]], drop_last: bool, total: int) -> None:
    every = Counter(f * 1000 + r for f in range(FILES) for r in range(ROWS))
    per_block = modes[0]["files_per_block"]
    for epoch in range(2):
        shares = [m["epochs"][epoch] for m in modes]
        assert all(share["data_ok"] for share in shares)
        lengths = {len(share["labels"]) for share in shares}
        assert lengths == {shares[0]["len"]}  # same len() on both ranks
        seen = Counter(label for share in shares for label in share["labels"])
        if drop_last:
            assert set(seen.values()) == {1}  # disjoint
            assert len(seen) == total - total % 2  # all but the documented tail
        else:
            assert set(seen) == set(every)  # every sample
            assert sum(seen.values()) == total + total % 2
        # Locality: a file is read by both ranks only at the boundary of their
        # contiguous shares (one block) and, without drop_last, in the padding.
        files = [{label // 1000 for label in share["labels"]} for share in shares]
        shared = files[0] & files[1]
        assert len(shared) <= (per_block if drop_last else 2 * per_block), shared
        # Each rank touches about half the files, not all of them.
        assert all(len(f) <= FILES // 2 + 2 * per_block for f in files), [len(f) for f in files]
    first, second = (modes[0]["epochs"][e]["labels"] for e in range(2))
    assert first != second  # set_epoch changed the order

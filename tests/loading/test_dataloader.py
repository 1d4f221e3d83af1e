"""DataLoader over 5,000 files in real worker processes under a real fd limit of 256."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.paths import HELPERS_DIR, SRC_DIR, TESTS_DIR

pytestmark = pytest.mark.slow  # real processes or servers: deselect with -m 'not slow'


def run_loader(corpus: str, *args: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, SRC_DIR]))
    result = subprocess.run(
        [sys.executable, os.path.join(HELPERS_DIR, "loader_check.py"), corpus, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Too many open files" not in result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def check_runs(report: dict[str, object], max_open: int) -> None:
    assert report["samples"] == 20000
    assert report["parent_ok"]
    runs = report["runs"]
    assert isinstance(runs, list) and runs
    for run in runs:
        assert run["exactly_once"], run
        assert run["data_ok"], run
        assert len(run["worker_pids"]) == 2, run
        assert 0 < run["peak_open"] <= max_open, run
        assert run["peak_fds"] <= max_open, run


def test_random_order_under_fd_limit_256(corpus_5000: str) -> None:
    """Shuffled order over 5,000 files: every open is a miss, so eviction is exercised."""
    report = run_loader(corpus_5000, "--shuffle", "--epochs", "1", "--persistent", "no")
    assert report["max_open"] == 64  # derived from the 256 limit: 256 // 4
    check_runs(report, 64)


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_contexts_and_persistent_workers(corpus_5000: str, context: str) -> None:
    # Workers started anew each epoch once (fork); every context keeps
    # persistent workers: a started worker costs seconds under spawn.
    persistent = "both" if context == "fork" else "yes"
    report = run_loader(
        corpus_5000,
        "--context",
        context,
        "--max-open",
        "32",
        "--epochs",
        "2",
        "--persistent",
        persistent,
    )
    check_runs(report, 32)
    runs = report["runs"]
    assert isinstance(runs, list)
    by_mode = {(r["persistent"], r["epoch"]): r["worker_pids"] for r in runs}
    # Persistent workers are the same processes in both epochs; others are new.
    assert by_mode[(True, 0)] == by_mode[(True, 1)]
    if context == "fork":
        assert by_mode[(False, 0)] != by_mode[(False, 1)]

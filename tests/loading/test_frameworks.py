"""Real training frameworks on 2 CPU processes (gloo): every sample exactly once.

Each case runs tests/framework_check.py in fresh processes, the way a user
would launch training, and reads back the labels every rank trained on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from helpers.corpus import make_corpus
from helpers.paths import HELPERS_DIR, TESTS_DIR

HERE = Path(HELPERS_DIR)
FILES, ROWS = 6, 10  # 60 samples: 30 per rank, batches of 8
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("frameworks")
    make_corpus(directory, files=FILES, rows=ROWS, width=4)
    return str(directory)


def run(command: list[str], tmp_path: Path) -> dict[int, dict[str, object]]:
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run(
        [*command, str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    reports = {}
    for rank in range(2):
        reports[rank] = json.loads((out / f"rank{rank}.json").read_text())
    return reports


def check_exactly_once(reports: dict[int, dict[str, object]]) -> list[list[int]]:
    """Every sample once per epoch across both ranks; returns each epoch's order."""
    orders = []
    for epoch in ("0", "1"):
        per_rank = [reports[rank]["epochs"][epoch] for rank in range(2)]  # type: ignore[index]
        everything = Counter(label for labels in per_rank for label in labels)
        expected = {f * 1000 + r for f in range(FILES) for r in range(ROWS)}
        assert set(everything) == expected, f"epoch {epoch}: missing {expected - set(everything)}"
        assert max(everything.values()) == 1, f"epoch {epoch}: duplicates"
        orders.append(per_rank[0] + per_rank[1])
    assert orders[0] != orders[1], "the order must change between epochs"
    return orders


def torchrun(mode: str, corpus: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port of its own on 127.0.0.1
        "--nproc_per_node",
        "2",
        str(HERE / "framework_check.py"),
        mode,
        corpus,
    ]


needs_lightning = pytest.mark.skipif(
    importlib.util.find_spec("pytorch_lightning") is None, reason="pytorch-lightning not installed"
)


@needs_lightning
def test_lightning_ddp_with_loader(corpus: str, tmp_path: Path) -> None:
    reports = run(
        [sys.executable, str(HERE / "framework_check.py"), "lightning-loader", corpus], tmp_path
    )
    assert reports[0]["world"] == 2
    assert reports[0]["set_epoch_calls"] == reports[1]["set_epoch_calls"] == [0, 1]
    check_exactly_once(reports)


@needs_lightning
def test_lightning_ddp_default_settings_with_sampler(corpus: str, tmp_path: Path) -> None:
    reports = run(
        [sys.executable, str(HERE / "framework_check.py"), "lightning-sampler", corpus], tmp_path
    )
    check_exactly_once(reports)


def test_torchrun_two_ranks(corpus: str, tmp_path: Path) -> None:
    reports = run(torchrun("torchrun", corpus), tmp_path)
    assert reports[0]["world"] == 2 and reports[0]["length"] == reports[1]["length"] == 4
    check_exactly_once(reports)


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="needs accelerate")
def test_accelerate_prepare_keeps_the_loader_exact(corpus: str, tmp_path: Path) -> None:
    check_exactly_once(run(torchrun("accelerate", corpus), tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="needs accelerate")
def test_accelerate_prepare_of_a_sampler_dataloader_is_a_clear_error(
    corpus: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [*torchrun("accelerate-sampler", corpus), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode != 0
    assert "accelerate's prepare() shards" in result.stdout + result.stderr

"""The README's Quickstart and the scripts in examples/ run as a user would run them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import ROOT as REPO_ROOT

pytestmark = pytest.mark.slow  # real processes: deselect with -m 'not slow'

ROOT = Path(REPO_ROOT)
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))


def python_block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def test_the_quickstart_runs_as_pasted(tmp_path: Path) -> None:
    """The README's Quickstart, pasted into a file and run: it makes its own corpus."""
    (tmp_path / "quickstart.py").write_text(python_block_after("## Quickstart"))
    result = subprocess.run(
        [sys.executable, "quickstart.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "1280"
    assert "shard_15.h5" in lines[0]  # sample 1000 is row 40 of the 16th file
    assert lines[1:] == ["epoch 0: 1280 samples", "epoch 1: 1280 samples"]


def test_the_training_loop_example() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_loop.py"), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1: 1280 samples" in result.stderr


def test_the_torchrun_example() -> None:
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun is not installed beside this Python")
    result = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(ROOT / "examples" / "ddp_torchrun.py"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(ENV, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "epoch 1: 2 ranks read 704 distinct samples once each" in result.stdout + result.stderr


def run_robomimic_example(*args: str) -> str:
    """Run examples/robomimic_windows.py as a user would; its log (stderr)."""
    script = str(ROOT / "examples" / "robomimic_windows.py")
    result = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, timeout=600, env=ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_the_robomimic_example() -> None:
    log = run_robomimic_example("--epochs", "2")
    assert "epoch 1:" in log and "windows of 10 steps" in log


def test_the_robomimic_example_on_a_folder_of_another_image_size(tmp_path: Path) -> None:
    """On a user's folder (8x8 images, not the 16x16 of its own corpus) the
    policy is sized from the data."""
    from helpers.robomimic import write_robomimic_corpus

    write_robomimic_corpus(tmp_path / "robot", files=3, demos=3)
    log = run_robomimic_example(str(tmp_path / "robot"), "--window", "4", "--stride", "2")
    assert "epoch 1:" in log and "windows of 4 steps" in log

"""Running test code in a fresh interpreter (lowered limits, a clean import state)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from helpers.paths import SRC_DIR, TESTS_DIR


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``code`` (dedented) in a new interpreter that imports h5pool and the helpers."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, SRC_DIR]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )

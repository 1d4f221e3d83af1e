"""Where things are, for tests that start processes or read the README."""

from __future__ import annotations

import os

HELPERS_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(HELPERS_DIR)
ROOT = os.path.dirname(TESTS_DIR)
SRC_DIR = os.path.join(ROOT, "src")

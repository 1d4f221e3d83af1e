#!/usr/bin/env bash
# Set up a virtual environment in .venv and run the test suite: the README's
# test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec python -m pytest "$@"

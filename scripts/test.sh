#!/usr/bin/env bash
# Set up a virtual environment in .venv and run the test suite: the README's
# test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
# Two pytest workers (pytest-xdist), a file's tests in one worker so that its
# module fixtures (an S3 server, written corpora) are built once.  Most tests
# wait on subprocesses, so two overlap well even on 2 cores: 8:14 -> 5:43 there.
exec python -m pytest -n "${H5POOL_TEST_WORKERS:-2}" --dist loadfile "$@"

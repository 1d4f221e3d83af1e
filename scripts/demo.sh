#!/usr/bin/env bash
# The main job in one command: set up .venv and run `h5pool bench` on the
# default synthetic corpus (2,000 files x 64 rows x 4 KiB), then remove it.
# Extra arguments go to `h5pool bench`, e.g. --plot bench.png.
set -euo pipefail
cd "$(dirname "$0")/.."
export H5POOL_EXTRAS="${H5POOL_EXTRAS:-plot}"
source scripts/venv.sh
exec h5pool bench "$@"

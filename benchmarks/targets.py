"""What the target benchmarks share: corpus scaling and printing figures in one place."""

from __future__ import annotations

import os
from typing import Any

#: ``H5POOL_BENCH_ENGINE_SCALE=0.25`` shrinks every target corpus for a quick look.
SCALE = float(os.environ.get("H5POOL_BENCH_ENGINE_SCALE", "1"))


def scaled(count: int) -> int:
    """A corpus size the issue gives, scaled (at least 8 files)."""
    return max(8, int(count * SCALE))


def report(benchmark: Any, title: str, figures: dict[str, float]) -> None:
    """Keep the figures with the benchmark's JSON and print them under ``title``."""
    benchmark.extra_info.update(figures)
    print(f"\n{title}")
    for name, value in figures.items():
        print(f"  {name:52s} {value:12.2f}")

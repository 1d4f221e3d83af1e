"""Fixtures of the benchmark suite: one synthetic corpus per session.

Sizes come from options or environment variables so the same suite runs on a
laptop and on a cluster node:

    pytest benchmarks --benchmark-only --corpus-files 5000
    H5POOL_BENCH_FILES=5000 pytest benchmarks --benchmark-only
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from h5pool.bench import common, run, synthetic

DEFAULTS = {
    "files": synthetic.DEFAULT_FILES,
    "rows": synthetic.DEFAULT_ROWS,
    "width": synthetic.DEFAULT_WIDTH,
    "pool": 64,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("h5pool benchmarks")
    for name, default in DEFAULTS.items():
        env = f"H5POOL_BENCH_{name.upper()}"
        group.addoption(
            f"--corpus-{name}",
            type=int,
            default=int(os.environ.get(env, default)),
            help=f"synthetic corpus {name} (env {env}, default {default})",
        )


def option(config: pytest.Config, name: str) -> int:
    return int(config.getoption(f"--corpus-{name}"))


@pytest.fixture(scope="session")
def corpus_files(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    folder = tmp_path_factory.mktemp("bench-corpus")
    config = request.config
    return synthetic.make_corpus(
        folder, option(config, "files"), option(config, "rows"), option(config, "width")
    )


@pytest.fixture(scope="session")
def corpus(request: pytest.FixtureRequest, corpus_files: list[str]) -> common.Corpus:
    return common.Corpus(
        common.BenchConfig(files=corpus_files, pool_size=option(request.config, "pool"))
    )


@pytest.fixture(scope="session")
def session_results() -> Iterator[dict[str, Any]]:
    """Results of every strategy run in this session, for ratios in the same run."""
    results: dict[str, Any] = {}
    yield results
    if results:
        table = run.ratios(list(results.values()))
        lines = ["", "h5pool strategies, measured in this run (per sample):"]
        for name, result in results.items():
            ratio = table[name]
            lines.append(
                f"  {name:16s} {result.us_per_sample or float('nan'):9.1f} µs"
                f"  {ratio['speedup_vs_open_per_sample'] or float('nan'):7.1f}x vs open-per-sample"
                f"  {ratio['cost_vs_raw_pread'] or float('nan'):7.1f}x raw-pread cost"
                f"  peak open {result.peak_open}  {result.note}"
            )
        print("\n".join(lines))

"""Every strategy of ``h5pool bench`` on the same corpus, in one run.

Each benchmark stores its per-sample figures in ``extra_info``; the session
prints the ratios against open-per-sample and raw-pread at the end.
"""

from __future__ import annotations

from typing import Any

import pytest

from h5pool.bench import common, registry, run

pytestmark = pytest.mark.benchmark(group="strategies", disable_gc=False)


@pytest.mark.parametrize("name", registry.STRATEGIES)
def test_strategy(
    benchmark: Any, corpus: common.Corpus, session_results: dict[str, Any], name: str
) -> None:
    runner = run.runner_of(name)
    with common.lowered_fd_limit(1024):
        result: common.Result = benchmark.pedantic(runner, args=(corpus,), rounds=1, iterations=1)
    session_results[name] = result
    benchmark.extra_info.update(result.as_dict())
    if name == "open-all" and result.seconds is None:
        assert "EMFILE" in result.note
    else:
        assert result.samples > 0
    if name.startswith("pooled"):
        assert result.peak_open is not None and result.peak_open <= corpus.config.pool_size
